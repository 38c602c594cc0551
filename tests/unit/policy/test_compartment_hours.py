"""A compartment's allowed hours: the ``compartment_hours_ok`` fact, computed in the compartment's
time zone for every caller, and the forbid that turns it into ``outside_compartment_hours``."""

from __future__ import annotations

import pytest

from bastion.policy.authorize import authorize
from bastion.policy.decision import Decision, Reason
from bastion.policy.facts import request_facts

from .factories import CONFIG, caller, snapshot

MONDAY_NOON = 1795435200.0  # 2026-11-23 12:00 UTC, a Monday
HOUR = 3600.0
# general (granted to the org lab) may be used Monday to Friday, 09:00-17:00 in Tokyo (UTC+9,
# no daylight saving time): 00:00-08:00 UTC.
TOKYO = CONFIG.replace(
    "    token_binding: optional\n",
    "    token_binding: optional\n"
    "    allowed_hours:\n"
    "      timezone: Asia/Tokyo\n"
    "      days: [mon, tue, wed, thu, fri]\n"
    '      start: "09:00"\n'
    '      end: "17:00"\n',
    1,
)
VENDOR_GRANTED = TOKYO.replace("orgs: [lab]", "orgs: [lab, acme]").replace(
    "  acme: {kind: vendor}",
    "  acme:\n"
    "    kind: vendor\n"
    "    sponsor: alice\n"
    '    contract: {start: "2026-01-01T00:00:00Z", end: "2027-01-01T00:00:00Z"}',
)
DENIED = ("forbid-outside-compartment-hours",)


def hours_ok(config_text: str, who: str, org: str, compartment: str | None, now: float) -> bool:
    built = snapshot(config_text=config_text)
    facts = request_facts(built, caller(who, org), compartment, "192.0.2.7", "openai", now)
    return facts.compartment_hours_ok


@pytest.mark.parametrize(
    ("now", "inside"),
    [
        (MONDAY_NOON - 12 * HOUR, True),  # Monday 09:00 in Tokyo: the window opens
        (MONDAY_NOON - 12 * HOUR - 1, False),  # 08:59:59 in Tokyo
        (MONDAY_NOON - 5 * HOUR, True),  # Monday 16:00 in Tokyo
        (MONDAY_NOON - 4 * HOUR - 1, True),  # 16:59:59
        (MONDAY_NOON - 4 * HOUR, False),  # 17:00 in Tokyo: closed
        (MONDAY_NOON, False),  # noon UTC is 21:00 in Tokyo
        (MONDAY_NOON + 4 * 86400 - 10 * HOUR, True),  # Friday 11:00 in Tokyo
        (MONDAY_NOON + 5 * 86400 - 10 * HOUR, False),  # Saturday 11:00 in Tokyo
    ],
)
def test_the_fact_follows_the_compartment_time_zone(now: float, inside: bool) -> None:
    assert hours_ok(TOKYO, "alice", "lab", "general", now) is inside


def test_vendor_principals_are_bound_by_the_compartment_hours_too() -> None:
    assert hours_ok(VENDOR_GRANTED, "victor", "acme", "general", MONDAY_NOON - 10 * HOUR)
    assert not hours_ok(VENDOR_GRANTED, "victor", "acme", "general", MONDAY_NOON)


def test_compartments_without_allowed_hours_are_open_at_any_time() -> None:
    for now in (MONDAY_NOON, MONDAY_NOON + 5 * 86400):
        assert hours_ok(TOKYO, "carol", "lab", "frontier", now)
        assert hours_ok(TOKYO, "alice", "lab", None, now)  # no compartment asked about


def test_outside_the_hours_a_granted_internal_caller_is_denied_with_the_reason() -> None:
    built = snapshot(epoch=3, config_text=TOKYO)
    who = caller("alice")
    facts = request_facts(built, who, "general", "192.0.2.7", "openai", MONDAY_NOON)
    decision = authorize(built, who, "chat", facts)
    assert decision == Decision(False, (Reason.OUTSIDE_COMPARTMENT_HOURS,), DENIED, 3)


def test_inside_the_hours_the_same_caller_is_allowed() -> None:
    built = snapshot(config_text=TOKYO)
    who = caller("alice")
    now = MONDAY_NOON - 10 * HOUR  # Monday 11:00 in Tokyo
    decision = authorize(built, who, "chat", request_facts(built, who, "general", "", "x", now))
    assert decision.allowed
    assert decision.reasons == (Reason.GRANTED,)


def test_a_vendor_outside_both_windows_gets_both_reasons() -> None:
    text = VENDOR_GRANTED.replace(
        "    sponsor: alice\n",
        '    sponsor: alice\n    working_hours: {timezone: UTC, start: "00:00", end: "06:00"}\n',
    )
    built = snapshot(config_text=text)
    who = caller("victor", "acme")
    facts = request_facts(built, who, "general", "192.0.2.7", "openai", MONDAY_NOON)
    decision = authorize(built, who, "chat", facts)
    assert decision.allowed is False
    assert set(decision.reasons) == {
        Reason.OUTSIDE_WORKING_HOURS,
        Reason.OUTSIDE_COMPARTMENT_HOURS,
    }


def test_an_ungranted_caller_outside_the_hours_is_still_denied() -> None:
    built = snapshot(config_text=TOKYO)
    who = caller("dave")  # disabled
    facts = request_facts(built, who, "general", "192.0.2.7", "openai", MONDAY_NOON)
    decision = authorize(built, who, "chat", facts)
    assert decision.allowed is False
    assert Reason.OUTSIDE_COMPARTMENT_HOURS in decision.reasons
