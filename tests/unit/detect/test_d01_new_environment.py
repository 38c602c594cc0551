"""D1 new environment: fires when several environment dimensions change at once after a
baseline; quiet on a second laptop enrolled long ago, VPN egress moves inside an ASN, SDK
upgrades, travel with one's own laptop, a new hire's first day and denials."""

from __future__ import annotations

import json
import secrets

from bastion.config.models import BastionConfig
from bastion.detect.detector import Context
from bastion.detect.detectors.d01_new_environment import NewEnvironment
from bastion.detect.findings import Severity
from bastion.detect.observation import Observation, network_of

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
DAY = 86_400.0
LAPTOP = "L" * 43
LAPTOP_2 = "M" * 43
ATTACKER = "X" * 43
CTX = Context(
    BastionConfig.model_validate(
        {
            "version": 1,
            "orgs": {"lab": {"kind": "internal"}, "acme": {"kind": "vendor"}},
            "principals": {
                "victor": {"kind": "user", "org": "acme"},
                "svc": {"kind": "service", "org": "lab"},
            },
        }
    )
)


def d01_use(time: float, principal: str = "victor", **fields: object) -> Observation:
    """An allowed request by ``principal`` from victor's usual environment unless overridden."""
    values: dict[str, object] = {
        "source_ip": "203.0.113.10",
        "jkt": LAPTOP,
        "asn": 64500,
        "country": "DE",
        "client": "OpenAI/Python 1.40.0",
        "allowed": True,
        "name": "request.decided",
        "org": "acme",
    }
    values.update(fields)
    ip = str(values["source_ip"])
    return Observation(
        idx=-1,
        id="ev_" + secrets.token_hex(6),
        time=time,
        principal=principal,
        network=network_of(ip) if ip else "",
        **values,  # type: ignore[arg-type]
    )


def d01_enrolled(time: float, jkt: str) -> Observation:
    return Observation(
        idx=-1, id="ev_enr", name="key.enrolled", time=time, target_type="key", target=jkt
    )


def d01_baselined(principal: str = "victor", **fields: object) -> NewEnvironment:
    """A detector that has seen ``principal`` work normally for two days (30 uses)."""
    detector = NewEnvironment()
    detector.observe(d01_enrolled(T0 - DAY, LAPTOP), CTX)
    for n in range(30):
        assert detector.observe(d01_use(T0 + n * 3600, principal, **fields), CTX) == []
    return detector


def test_new_device_and_network_and_country_is_high() -> None:
    detector = d01_baselined()
    obs = d01_use(T0 + 2 * DAY, jkt=ATTACKER, source_ip="198.51.100.7", asn=64666, country="US")
    [draft] = detector.observe(obs, CTX)
    assert draft.detection == "D1"
    assert draft.severity is Severity.HIGH
    assert (draft.entity_type, draft.entity) == ("principal", "victor")
    assert (draft.principal, draft.org) == ("victor", "acme")
    assert draft.evidence == (obs.id,)
    assert "T1078.004" in draft.techniques
    for evidence in ("victor", "XXXXXXXXXXXX", "AS64666", "198.51.100.0/24", "US", "30 earlier"):
        assert evidence in draft.explanation
    # learned: the same environment again is not new
    assert detector.observe(d01_use(T0 + 2 * DAY + 60, jkt=ATTACKER, asn=64666), CTX) == []


def test_new_device_with_new_network_without_asn_data_is_high() -> None:
    detector = d01_baselined(asn=0, country="")  # no IP database: networks are /24s
    obs = d01_use(T0 + 2 * DAY, jkt=ATTACKER, source_ip="198.51.100.7", asn=0, country="")
    [draft] = detector.observe(obs, CTX)
    assert draft.severity is Severity.HIGH
    assert "new network 198.51.100.0/24" in draft.explanation


def test_a_token_event_without_an_asn_does_not_judge_the_network() -> None:
    detector = d01_baselined()  # requests carry ASNs; token events never do
    detector.observe(d01_enrolled(T0 + 2 * DAY - 600, LAPTOP_2), CTX)
    token = d01_use(T0 + 2 * DAY, name="token.issued", jkt=LAPTOP_2, source_ip="203.0.201.9", asn=0)
    assert detector.observe(token, CTX) == []  # a new laptop, on a shifted VPN egress


def test_a_token_event_teaches_nothing_so_the_request_after_it_is_judged_in_full() -> None:
    detector = d01_baselined()
    stranger = {"jkt": ATTACKER, "source_ip": "198.51.100.7"}
    token = d01_use(T0 + 2 * DAY, name="token.issued", asn=0, country="", client="", **stranger)
    [first] = detector.observe(token, CTX)
    assert first.severity is Severity.LOW  # all it shows: a device key never enrolled
    [draft] = detector.observe(d01_use(T0 + 2 * DAY + 5, asn=64666, country="US", **stranger), CTX)
    assert draft.severity is Severity.HIGH
    assert "new device key XXXXXXXXXXXX" in draft.explanation


def test_second_laptop_enrolled_long_ago_is_quiet() -> None:
    detector = d01_baselined()
    detector.observe(d01_enrolled(T0 - 60 * DAY, LAPTOP_2), CTX)
    # first used from home (a new ASN): a device enrolled long ago is not a new device
    home = d01_use(T0 + 2 * DAY, jkt=LAPTOP_2, source_ip="198.51.100.7", asn=64666)
    assert detector.observe(home, CTX) == []


def test_a_key_enrolled_minutes_ago_counts_as_new_with_a_new_network() -> None:
    detector = d01_baselined()
    detector.observe(d01_enrolled(T0 + 2 * DAY - 300, ATTACKER), CTX)
    same_place = d01_use(T0 + 2 * DAY, jkt=ATTACKER)
    assert detector.observe(same_place, CTX) == []  # a new laptop at the usual desk
    detector.observe(d01_enrolled(T0 + 2 * DAY - 300, LAPTOP_2), CTX)
    elsewhere = d01_use(T0 + 2 * DAY, jkt=LAPTOP_2, source_ip="198.51.100.7", asn=64666)
    [draft] = detector.observe(elsewhere, CTX)
    assert draft.severity is Severity.HIGH
    assert "enrolled 5 min ago" in draft.explanation


def test_a_key_never_seen_enrolled_alone_is_low() -> None:
    detector = d01_baselined()
    [draft] = detector.observe(d01_use(T0 + 2 * DAY, jkt=ATTACKER), CTX)
    assert (draft.severity, draft.confidence) == (Severity.LOW, 0.3)


def test_vpn_egress_change_within_the_same_asn_is_quiet() -> None:
    detector = d01_baselined()
    assert detector.observe(d01_use(T0 + 2 * DAY, source_ip="203.0.200.9"), CTX) == []
    # a laptop enrolled this morning, on a VPN whose egress moved again: still one dimension
    detector.observe(d01_enrolled(T0 + 2 * DAY, LAPTOP_2), CTX)
    moved = d01_use(T0 + 2 * DAY + 600, jkt=LAPTOP_2, source_ip="203.0.201.9")
    assert detector.observe(moved, CTX) == []


def test_sdk_upgrade_is_not_a_new_tool() -> None:
    detector = d01_baselined(asn=0)  # no ASN data: a new /24 is a new network
    upgraded = d01_use(T0 + 2 * DAY, source_ip="198.51.100.7", asn=0, client="OpenAI/Python 1.57.0")
    assert detector.observe(upgraded, CTX) == []  # a new /24 (no ASN data) alone: nothing
    asynchronous = d01_use(
        T0 + 2 * DAY + 60, source_ip="198.18.0.7", asn=0, client="AsyncOpenAI/Python 1.57.0"
    )
    assert detector.observe(asynchronous, CTX) == []
    curl = d01_use(T0 + 2 * DAY + 120, source_ip="192.0.2.1", asn=0, client="curl/8.5.0")
    [draft] = detector.observe(curl, CTX)  # new network and a new tool on a known device
    assert draft.severity is Severity.LOW
    assert "new client tool curl" in draft.explanation


def test_travel_with_ones_own_laptop_is_quiet() -> None:
    detector = d01_baselined()
    abroad = d01_use(T0 + 2 * DAY, source_ip="198.51.100.7", asn=64777, country="JP")
    assert detector.observe(abroad, CTX) == []


def test_known_device_with_everything_else_new_is_medium() -> None:
    detector = d01_baselined()
    obs = d01_use(
        T0 + 2 * DAY, source_ip="198.51.100.7", asn=64777, country="BR", client="curl/8.5"
    )
    [draft] = detector.observe(obs, CTX)
    assert draft.severity is Severity.MEDIUM


def test_new_hire_first_day_is_learned_not_flagged() -> None:
    detector = NewEnvironment()
    networks = ["203.0.113.10", "198.51.100.7", "192.0.2.1"]
    for n in range(60):  # a busy first day, on several networks and tools
        obs = d01_use(
            T0 + n * 600,
            "newbie",
            source_ip=networks[n % 3],
            asn=64500 + n % 3,
            client=("curl/8.5", "OpenAI/Python 1.2")[n % 2],
        )
        assert detector.observe(obs, CTX) == []
    # a day later, one more network from the same machine: still a single dimension
    assert detector.observe(d01_use(T0 + 1.5 * DAY, "newbie", asn=64999), CTX) == []


def test_denials_are_not_uses() -> None:
    detector = d01_baselined()
    stranger = {"jkt": ATTACKER, "source_ip": "198.51.100.7", "asn": 64666, "country": "US"}
    denied = d01_use(T0 + 2 * DAY, allowed=False, **stranger)
    assert detector.observe(denied, CTX) == []
    refused = d01_use(T0 + 2 * DAY, name="token.refused", allowed=False, **stranger)
    assert detector.observe(refused, CTX) == []
    [draft] = detector.observe(d01_use(T0 + 2 * DAY + 1, name="token.issued", **stranger), CTX)
    assert draft.severity is Severity.HIGH  # the denials taught it nothing


def test_delegated_calls_are_judged_for_the_key_holder() -> None:
    detector = d01_baselined("svc")
    obs = d01_use(
        T0 + 2 * DAY, "victor", act=("svc",), jkt=ATTACKER, asn=64666, source_ip="192.0.2.1"
    )
    [draft] = detector.observe(obs, CTX)
    assert draft.entity == draft.principal == "svc"
    assert draft.org == "acme"  # the event's org (the subject's, which the actor shares)


def test_a_long_absence_restarts_the_baseline() -> None:
    detector = d01_baselined()
    back = d01_use(T0 + 40 * DAY, jkt=ATTACKER, asn=64666, source_ip="192.0.2.1")
    assert detector.observe(back, CTX) == []


def test_state_round_trips_through_json() -> None:
    detector = d01_baselined()
    copy = NewEnvironment()
    copy.load(json.loads(json.dumps(detector.dump())))
    assert copy.dump() == detector.dump()
    obs = d01_use(T0 + 2 * DAY, jkt=ATTACKER, asn=64666, source_ip="192.0.2.1")
    assert copy.observe(obs, CTX) == detector.observe(obs, CTX) != []


def test_state_stays_bounded_for_50000_principals() -> None:
    detector = NewEnvironment(cap_principals=20_000, cap_keys=20_000)
    for n in range(50_000):
        detector.observe(d01_enrolled(T0, f"{n:043d}"), CTX)
        detector.observe(d01_use(T0 + n, f"p{n}", jkt=f"{n:043d}"), CTX)
    assert len(detector.activity) == len(detector.seen) == len(detector.enrolled) == 20_000
    assert detector.activity.stats.evictions == 30_000
    assert detector.seen.stats.evictions == 30_000
    assert detector.enrolled.stats.evictions == 30_000
