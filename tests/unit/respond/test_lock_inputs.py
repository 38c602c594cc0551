"""What a lock may target and what a throttle rate may be: checked before anything is stored."""

from __future__ import annotations

import math

import pytest

from bastion.errors import BadRequest
from bastion.respond.locks import validate_rate, validate_target


@pytest.mark.parametrize(
    ("target", "normalized"),
    [
        ("203.0.113.0/24", "203.0.113.0/24"),
        (" 10.1.0.0/16 ", "10.1.0.0/16"),
        ("203.0.113.9", "203.0.113.9/32"),
        ("203.0.113.9/32", "203.0.113.9/32"),
        ("2001:DB8:0:1::/64", "2001:db8:0:1::/64"),
        ("2001:db8:7::/48", "2001:db8:7::/48"),
        ("2001:db8::1", "2001:db8::1/128"),
    ],
)
def test_network_targets_are_normalized(target: str, normalized: str) -> None:
    assert validate_target("network", target) == normalized


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("203.0.112.0/23", "network locks take IPv4 prefixes /32, /24, /16 only"),
        ("0.0.0.0/0", "network locks take IPv4 prefixes /32, /24, /16 only"),
        ("2001:db8::/56", "network locks take IPv6 prefixes /128, /64, /48 only"),
        ("203.0.113.7/24", "the network has host bits set: did you mean 203.0.113.0/24?"),
        ("2001:db8::1/64", "the network has host bits set: did you mean 2001:db8::/64?"),
        ("::ffff:203.0.113.7", "lock an IPv4-mapped network by its IPv4 form"),
        ("fe80::%eth0/64", "invalid network for a lock target"),
        ("203.0.113.0/24/8", "invalid network for a lock target"),
        ("example.com", "invalid network for a lock target"),
        ("", "invalid network for a lock target"),
        ("*", "invalid network for a lock target"),
        ("9" * 5000, "invalid network for a lock target"),
    ],
)
def test_bad_network_targets_are_refused_with_a_reason(target: str, message: str) -> None:
    with pytest.raises(BadRequest) as refused:
        validate_target("network", target)
    assert refused.value.message.startswith(message)


@pytest.mark.parametrize("target_type", ["stepup", "throttle"])
def test_step_up_and_throttle_locks_name_a_principal(target_type: str) -> None:
    assert validate_target(target_type, "alice") == "alice"
    with pytest.raises(BadRequest, match=f"invalid {target_type} name"):
        validate_target(target_type, "al ice")


@pytest.mark.parametrize(
    "jkt", ["-Bj_EarTvzjEuifzcm1en1YDRmKksjxnV6oXVeBNPwc", "_x9aQ", "--abc", "AbC-_09"]
)
def test_a_key_lock_takes_any_thumbprint(jkt: str) -> None:
    # base64url thumbprints may start with '-' or '_' (2 in 64 of them): they must be lockable
    assert validate_target("key", jkt) == jkt


@pytest.mark.parametrize("jkt", ["", "a b", "abc\n", "a.b", "a/b", "a:b", "x" * 129, "é"])
def test_a_key_lock_refuses_what_is_not_a_thumbprint(jkt: str) -> None:
    with pytest.raises(BadRequest, match="invalid key name"):
        validate_target("key", jkt)


@pytest.mark.parametrize("target_type", ["principal", "org", "family", "compartment"])
def test_other_names_still_start_with_a_letter_or_digit(target_type: str) -> None:
    with pytest.raises(BadRequest, match=f"invalid {target_type} name"):
        validate_target(target_type, "-alice")


@pytest.mark.parametrize("rate", [0.5, 1, 6, 10_000])
def test_a_throttle_takes_a_rate(rate: float) -> None:
    validate_rate("throttle", rate)


@pytest.mark.parametrize("rate", [0, -1, 10_000.5, math.nan, math.inf, -math.inf])
def test_a_throttle_rate_out_of_range_is_refused(rate: float) -> None:
    with pytest.raises(BadRequest, match="throttle rate must be above 0 and at most 10000"):
        validate_rate("throttle", rate)


@pytest.mark.parametrize(("target_type", "rate"), [("throttle", None), ("principal", 6.0)])
def test_only_a_throttle_has_a_rate(target_type: str, rate: float | None) -> None:
    with pytest.raises(BadRequest, match="a throttle lock needs a rate"):
        validate_rate(target_type, rate)
