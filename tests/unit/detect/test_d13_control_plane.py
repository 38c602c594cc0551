"""D13: control-plane changes by an unusual actor. Fires on any change by a vendor principal
(critical, even during warm-up), on an actor's first change of a family after the warm-up (low,
medium for an actor never seen), on a burst of changes (medium), at an unusual hour (low), and
high when those combine; quiet on an admin's routine onboarding, on self-service key
enrollment with a code, on declared approvers approving, and on Bastion's own actors."""

from __future__ import annotations

import orjson

from bastion.config.models import BastionConfig
from bastion.detect.detector import Context
from bastion.detect.detectors.d13_control_plane import ControlPlane
from bastion.detect.findings import Draft, Severity
from bastion.detect.observation import Observation

T0 = 1_699_920_000.0  # a midnight, UTC
HOUR = 3600.0
DAY = 86_400.0
AFTER_WARMUP = T0 + 4 * DAY + 10 * HOUR
CTX = Context(
    BastionConfig.model_validate(
        {
            "version": 1,
            "orgs": {
                "lab": {"kind": "internal"},
                "acme": {"kind": "vendor", "sponsor": "alice"},
            },
            "principals": {
                "alice": {"kind": "user", "org": "lab", "roles": ["admin"]},
                "audrey": {"kind": "user", "org": "lab"},
                "victor": {"kind": "user", "org": "acme"},
            },
            "compartments": {
                "frontier": {
                    "level": "critical",
                    "access": {"approvals": 2, "approvers": ["audrey", "alice"]},
                }
            },
        }
    ),
    orgs_of={"vera": "acme", "newhire": "lab"},
)


class Log:
    def __init__(self) -> None:
        self.n = 0

    def admin(
        self, time: float, action: str, actor: str, target: str, target_type: str = "principal"
    ) -> Observation:
        self.n += 1
        return Observation(
            idx=self.n,
            id=f"ev_{self.n}",
            name=action,
            action=action,
            time=time,
            actor=actor,
            target_type=target_type,
            target=target,
        )


def run(detector: ControlPlane, observations: list[Observation]) -> list[Draft]:
    return [draft for obs in observations for draft in detector.observe(obs, CTX)]


def onboarding(
    log: Log, time: float, hire: str, admin: str = "principal:alice"
) -> list[Observation]:
    """An admin creates a principal and issues it an enrollment code; it enrolls its key."""
    return [
        log.admin(time, "principal.created", admin, hire),
        log.admin(time + 30, "enrollment.code_issued", admin, hire),
        log.admin(time + 300, "key.enrolled", f"principal:{hire}", f"jkt-{hire}", "key"),
    ]


def test_a_vendor_principal_changing_the_control_plane_is_critical_at_once() -> None:
    detector, log = ControlPlane(), Log()
    (draft,) = run(detector, [log.admin(T0, "key.enrolled", "principal:vera", "jkt-x", "key")])
    assert draft.severity is Severity.CRITICAL
    assert (draft.entity_type, draft.entity, draft.principal, draft.org) == (
        "principal",
        "vera",
        "vera",
        "acme",
    )
    assert draft.techniques == ("T1098.001",)
    assert draft.explanation == (
        "vera recorded key.enrolled on key jkt-x: "
        "a principal of vendor org acme made a control-plane change"
    )
    assert draft.evidence == ("ev_1",)
    (draft,) = run(detector, [log.admin(T0 + 5, "lock.released", "victor", "victor")])
    assert draft.severity is Severity.CRITICAL
    assert draft.techniques == ("T1562.008",)


def test_a_vendor_enrolling_its_own_key_with_a_code_is_self_service() -> None:
    detector, log = ControlPlane(), Log()
    run(detector, onboarding(log, T0, "seed"))  # the detector's clock starts
    assert run(detector, onboarding(log, AFTER_WARMUP, "victor")) == []
    late = log.admin(AFTER_WARMUP + 2 * HOUR, "key.enrolled", "principal:victor", "jkt-2", "key")
    (draft,) = run(detector, [late])  # the code's window is over: not self-service any more
    assert draft.severity is Severity.CRITICAL


def test_routine_onboarding_by_a_known_admin_after_the_warmup_is_quiet() -> None:
    detector, log = ControlPlane(), Log()
    warmup = onboarding(log, T0 + 10 * HOUR, "hire1") + onboarding(log, T0 + DAY, "hire2")
    assert run(detector, warmup) == []
    assert run(detector, onboarding(log, AFTER_WARMUP, "newhire")) == []


def test_during_the_warmup_only_vendors_are_judged() -> None:
    detector, log = ControlPlane(), Log()
    changes = [log.admin(T0 + i, "key.revoked", "cli:root", f"k{i}", "key") for i in range(20)]
    changes.append(log.admin(T0 + 30, "mfa.removed", "principal:mallory", "carol"))
    assert run(detector, changes) == []


def test_a_known_actor_first_change_of_a_new_family_is_low() -> None:
    detector, log = ControlPlane(), Log()
    run(detector, onboarding(log, T0 + 10 * HOUR, "hire1"))
    (draft,) = run(detector, [log.admin(AFTER_WARMUP, "mfa.removed", "principal:alice", "carol")])
    assert draft.severity is Severity.LOW
    assert draft.explanation == (
        "alice recorded mfa.removed on principal carol: first mfa change by alice"
    )
    assert (
        run(detector, [log.admin(AFTER_WARMUP + 60, "mfa.removed", "principal:alice", "d")]) == []
    )


def test_an_actor_never_seen_changing_anything_is_medium() -> None:
    detector, log = ControlPlane(), Log()
    run(detector, onboarding(log, T0 + 10 * HOUR, "hire1"))
    (draft,) = run(detector, [log.admin(AFTER_WARMUP, "lock.released", "cli:mallory", "carol")])
    assert draft.severity is Severity.MEDIUM
    assert (draft.entity_type, draft.entity, draft.principal) == ("actor", "cli:mallory", "")
    assert "first control-plane change by cli:mallory" in draft.explanation


def test_a_burst_of_changes_to_five_targets_is_medium_at_the_fifth() -> None:
    detector, log = ControlPlane(), Log()
    run(detector, [log.admin(T0 + 10 * HOUR, "key.revoked", "principal:alice", "k0", "key")])
    revocations = [
        log.admin(AFTER_WARMUP + i * 60, "key.revoked", "principal:alice", f"k{i}", "key")
        for i in range(1, 6)
    ]
    drafts = run(detector, revocations)
    (draft,) = drafts
    assert draft.severity is Severity.MEDIUM
    assert draft.evidence == (revocations[4].id,)
    assert "5 targets changed within 10 min" in draft.explanation


def test_repeated_changes_to_one_target_are_not_a_burst() -> None:
    detector, log = ControlPlane(), Log()
    run(detector, [log.admin(T0 + 10 * HOUR, "lock.released", "principal:alice", "carol")])
    again = [
        log.admin(AFTER_WARMUP + i * 30, "lock.released", "principal:alice", "carol")
        for i in range(10)
    ]
    assert run(detector, again) == []


def test_an_unusual_hour_is_low_and_high_with_a_first() -> None:
    detector, log = ControlPlane(), Log()
    habits = [  # office hours, 9:00 to 12:00, nine days
        log.admin(T0 + day * DAY + (9 + i) * HOUR, "key.revoked", "principal:alice", f"k{i}")
        for day in range(9)
        for i in range(4)
    ]
    assert run(detector, habits) == []
    night = T0 + 9 * DAY + 3 * HOUR
    (draft,) = run(detector, [log.admin(night, "key.revoked", "principal:alice", "k9", "key")])
    assert draft.severity is Severity.LOW
    assert "at 03:00 UTC, an unusual hour for alice" in draft.explanation
    (draft,) = run(detector, [log.admin(night + 60, "mfa.removed", "principal:alice", "carol")])
    assert draft.severity is Severity.HIGH
    assert "first mfa change by alice" in draft.explanation
    assert "an unusual hour" in draft.explanation


def test_bastion_actors_such_as_config_sync_are_not_judged() -> None:
    detector, log = ControlPlane(), Log()
    run(detector, onboarding(log, T0 + 10 * HOUR, "hire1"))
    sync = [
        log.admin(AFTER_WARMUP + i, "principal.created", "bastion:config", f"p{i}")
        for i in range(50)
    ]
    sync.append(log.admin(AFTER_WARMUP + 60, "grant.created", "bastion:access", "carol"))
    sync.append(log.admin(AFTER_WARMUP + 61, "principal.disabled", "bastion:lifecycle", "dora"))
    sync.append(log.admin(AFTER_WARMUP + 62, "lock.created", "bastion:respond", "vera"))
    assert run(detector, sync) == []


def test_declared_approvers_and_sponsors_are_doing_their_job() -> None:
    detector, log = ControlPlane(), Log()
    run(detector, onboarding(log, T0 + 10 * HOUR, "hire1"))
    routine = [
        log.admin(AFTER_WARMUP, "access.approved", "audrey", "carol"),
        log.admin(AFTER_WARMUP + 60, "review.decided", "alice", "victor"),
        log.admin(AFTER_WARMUP + 90, "access.requested", "carol", "carol"),
        log.admin(AFTER_WARMUP + 120, "lock.created", "principal:alice", "victor"),
    ]
    assert run(detector, routine) == []
    (draft,) = run(detector, [log.admin(AFTER_WARMUP + 180, "grant.revoked", "cli:ops", "carol")])
    assert draft.techniques == ("T1098.003",)


def test_events_without_an_actor_or_outside_the_control_plane_are_ignored() -> None:
    detector, log = ControlPlane(), Log()
    run(detector, onboarding(log, T0, "hire1"))
    ignored = [
        log.admin(AFTER_WARMUP, "key.enrolled", "", "jkt-z", "key"),
        log.admin(AFTER_WARMUP, "token.issued", "principal:vera", "vera"),
        log.admin(AFTER_WARMUP, "request.decided", "principal:vera", ""),
    ]
    assert run(detector, ignored) == []


def test_state_round_trips() -> None:
    detector, log = ControlPlane(), Log()
    run(detector, onboarding(log, T0 + 10 * HOUR, "hire1"))
    run(detector, [log.admin(T0 + 11 * HOUR, "enrollment.code_issued", "cli:root", "victor")])
    restored = ControlPlane()
    restored.load(orjson.loads(orjson.dumps(detector.dump())))  # as the store keeps it
    assert restored.dump() == detector.dump()
    for copy in (detector, restored):
        assert run(copy, onboarding(Log(), AFTER_WARMUP, "newhire")) == []
        (draft,) = run(copy, [Log().admin(AFTER_WARMUP, "mfa.removed", "principal:alice", "c")])
        assert draft.severity is Severity.LOW


def test_state_is_bounded() -> None:
    detector, log = ControlPlane(), Log()  # the shipped caps
    for n in range(50_000):
        detector.observe(log.admin(T0 + n * 0.01, "key.revoked", f"cli:u{n}", f"k{n}", "key"), CTX)
    for structure in (detector.families, detector.changes, detector.hours):
        assert len(structure) == 10_000
    assert detector.families.stats.evictions == 40_000
    assert detector.hours.stats.evictions == 40_000


def test_a_one_off_setup_burst_is_no_habit_of_hours() -> None:
    detector, log = ControlPlane(), Log()
    setup = [log.admin(T0 + i, "key.enrolled", "ops-admin", f"jkt-{i}", "key") for i in range(60)]
    assert run(detector, setup) == []
    later = T0 + 9 * DAY + 15 * HOUR  # another hour, long after: not "unusual" on that basis
    assert run(detector, [log.admin(later, "key.enrolled", "ops-admin", "jkt-x", "key")]) == []


def test_a_vendor_refused_by_the_admin_api_is_high_at_once() -> None:
    detector, log = ControlPlane(), Log()
    refused = log.admin(T0, "admin.denied", "victor", "GET /admin/v1/principals", "route")
    (draft,) = run(detector, [refused])
    assert draft.severity is Severity.HIGH
    assert (draft.entity, draft.principal, draft.org) == ("victor", "victor", "acme")
    assert draft.explanation == (
        "victor was refused GET /admin/v1/principals by the admin API: "
        "a principal of vendor org acme has no control-plane role"
    )
    assert draft.techniques == ControlPlane.techniques


def test_an_internal_principal_refused_by_the_admin_api_is_medium() -> None:
    detector, log = ControlPlane(), Log()
    refused = log.admin(T0, "admin.denied", "audrey", "POST /admin/v1/locks", "route")
    (draft,) = run(detector, [refused])
    assert draft.severity is Severity.MEDIUM
    assert "it holds no role for that call" in draft.explanation


def test_a_vendor_principal_added_through_the_api_is_known_from_its_requests() -> None:
    detector, log = ControlPlane(), Log()
    request = Observation(
        idx=0, id="ev_0", name="request.decided", time=T0, principal="zed", org="acme"
    )
    refused = log.admin(T0 + 60, "admin.denied", "zed", "POST /admin/v1/principals", "route")
    (draft,) = run(detector, [request, refused])
    assert (draft.severity, draft.org) == (Severity.HIGH, "acme")
    (draft,) = run(detector, [log.admin(T0 + 90, "lock.released", "principal:zed", "zed")])
    assert draft.severity is Severity.CRITICAL
