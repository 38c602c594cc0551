"""D11: undeclared anonymizer / hosting origins. High when denied for it, medium when a lower
compartment served it; quiet for declared origins, plain networks and other denials."""

from __future__ import annotations

from typing import Any

from bastion.config.models import BastionConfig
from bastion.detect.detector import Context
from bastion.detect.detectors.d11_origin import UndeclaredOrigin
from bastion.detect.findings import Severity
from bastion.detect.observation import Observation

CTX = Context(
    BastionConfig.model_validate(
        {
            "version": 1,
            "orgs": {
                "acme": {"kind": "vendor"},
                "farm": {"kind": "vendor", "allowed_origins": ["hosting"]},
            },
            "principals": {
                "vic": {"kind": "user", "org": "acme"},
                "bot": {"kind": "service", "org": "farm"},
            },
        }
    )
)


def call(**fields: Any) -> Observation:
    values: dict[str, Any] = {
        "idx": 1,
        "id": "ev_1",
        "name": "request.decided",
        "time": 10.0,
        "principal": "vic",
        "org": "acme",
        "model": "m",
        "origin": "anonymizer",
        "asn": 64512,
        "source_ip": "198.18.0.9",
        "allowed": False,
        "reasons": ("undeclared_origin",),
    }
    values.update(fields)
    return Observation(**values)


def test_a_denied_undeclared_origin_is_high() -> None:
    (draft,) = UndeclaredOrigin().observe(call(), CTX)
    assert draft.severity is Severity.HIGH
    assert "AS64512" in draft.explanation
    assert "anonymizer" in draft.explanation


def test_an_allowed_undeclared_origin_is_medium() -> None:
    (draft,) = UndeclaredOrigin().observe(call(allowed=True, reasons=("granted",)), CTX)
    assert draft.severity is Severity.MEDIUM


def test_declared_origins_plain_networks_and_other_denials_are_quiet() -> None:
    detector = UndeclaredOrigin()
    assert detector.observe(call(principal="bot", org="farm", origin="hosting"), CTX) == []
    assert detector.observe(call(origin=""), CTX) == []
    assert detector.observe(call(reasons=("not_granted",)), CTX) == []
