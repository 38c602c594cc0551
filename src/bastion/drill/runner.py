"""Running the drill: check the server is ready and trusts this host as a proxy, run each step
(a step that cannot run is reported, never skipped silently), and return the results."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import httpx

from bastion.errors import BastionError, Unavailable

from .lab import Lab
from .scorecard import StepResult
from .steps import STEPS

Step = Callable[[Lab], StepResult]


def preflight(lab: Lab) -> None:
    """The server answers, and a contractor at the vendor's home network gets through (if
    not, the server does not trust this host's X-Forwarded-For, and no step would mean much)."""
    try:
        ready = lab.http.get(lab.url + "/readyz")
    except httpx.HTTPError as exc:
        raise Unavailable(f"no Bastion answers at {lab.url}: {type(exc).__name__}") from None
    if ready.status_code != 200:
        raise Unavailable(f"Bastion at {lab.url} is not ready (HTTP {ready.status_code})")
    probe = lab.contractor("pre")
    attempt = probe.chat(lab.model)
    if attempt.ok:
        return
    hint = ""
    if "network_not_allowed" in attempt.reasons:
        hint = (
            ": the server does not take this host's X-Forwarded-For; start it with "
            "BASTION_TRUSTED_PROXIES=127.0.0.1/32 (the drill plays the vendor's networks that way)"
        )
    raise BastionError(f"a contractor's normal request failed ({attempt.describe()}){hint}")


def run(
    lab: Lab,
    steps: Sequence[Step] = STEPS,
    on_result: Callable[[StepResult], object] | None = None,
) -> list[StepResult]:
    preflight(lab)
    results = []
    for step in steps:
        try:
            result = step(lab)
        except BastionError as exc:
            name = step.__name__.split("_", 1)[0].upper()
            result = StepResult(name, step.__name__, error=exc.message[:300])
        results.append(result)
        if on_result is not None:
            on_result(result)
    return sorted(results, key=lambda r: int(r.step[1:]))
