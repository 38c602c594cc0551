"""D15: client tooling fingerprint change (AML.T0016.001).

Every request carries the caller's user agent (``obs.client``). Normalized to the tool's product
without its version (``OpenAI/Python 3.57.0`` and ``AsyncOpenAI/Python 3.58.1`` are both
``openai/python``; ``curl/8.5`` is ``curl``), it says which tool a credential is used with. An SDK
upgrade is therefore not a change; a different tool is.

- A token family (one login on one device key) whose tool changes mid-life to a tool the
  principal has not used in ``ttl`` seconds is MEDIUM: the token and its key were picked up by
  something else. A family that mixes tools the principal already uses (one program calling both
  the OpenAI and the Anthropic SDK with one helper session) is not a finding.
- A principal starting to use a tool never seen for them is LOW.

Neither fires before the principal has a baseline (``baseline_events`` requests over
``baseline_span`` seconds): a new hire's first day is learned, not flagged.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any, ClassVar

from ..detector import Context, StatefulDetector, Structure
from ..findings import Draft, Severity
from ..observation import Observation
from ..state import Activity, FirstSeen, Table

DAY = 86_400.0
MAX_TOOL = 64


def _is_version(token: str) -> bool:
    return token[0].isdigit() or (len(token) > 1 and token[0] in "vV" and token[1].isdigit())


@lru_cache(maxsize=4096)
def tool_of(client: str) -> str:
    """The tool a user agent names, without versions or platform comments, in lower case:
    ``"OpenAI/Python 3.57.0"`` → ``"openai/python"``, ``"curl/8.5"`` → ``"curl"``. The
    ``Async`` prefix of an SDK's asynchronous client is dropped (same tool). Empty if none."""
    head = client.split("(", 1)[0].replace("/", " ")
    parts: list[str] = []
    for token in head.split():
        if _is_version(token):
            continue
        word = token.lower()
        if not parts and word.startswith("async") and len(word) > 5:
            word = word[5:]
        parts.append(word)
        if len(parts) == 2:
            break
    return "/".join(parts)[:MAX_TOOL]


def _is_tools(record: Any) -> bool:
    return isinstance(record, list) and all(isinstance(tool, str) for tool in record)


class ClientFingerprint(StatefulDetector):
    id: ClassVar[str] = "D15"
    title: ClassVar[str] = "Client tooling fingerprint change"
    techniques: ClassVar[tuple[str, ...]] = ("AML.T0016.001",)
    window: ClassVar[float] = 6 * 3600.0

    def __init__(
        self,
        *,
        ttl: float = 30 * DAY,
        baseline_events: int = 20,
        baseline_span: float = DAY,
        cap_principals: int = 20_000,
        cap_families: int = 50_000,
        tools_per_principal: int = 16,
        tools_per_family: int = 4,
    ) -> None:
        self.tools_per_family = tools_per_family
        self.activity = Activity(cap_principals, baseline_events, baseline_span, ttl)
        self.tools = FirstSeen(ttl, cap_principals, tools_per_principal)
        self.families: Table[list[str]] = Table(cap_families, shape=_is_tools)

    def structures(self) -> Mapping[str, Structure]:
        return {"activity": self.activity, "tools": self.tools, "families": self.families}

    def observe(self, obs: Observation, ctx: Context) -> list[Draft]:
        holder = obs.holder
        if not obs.is_request or not holder or not obs.client:
            return []
        tool = tool_of(obs.client)
        if not tool:
            return []
        established = self.activity.record(holder, obs.time)
        known = self.tools.seen(holder, tool, obs.time)
        before = self._family_tools(obs.family, tool)
        if not established or known:
            return []
        org = obs.org or ctx.org_of(holder)
        if before:
            return [self._family_draft(obs, holder, org, tool, before)]
        return [self._principal_draft(obs, holder, org, tool)]

    def _family_tools(self, family: str, tool: str) -> list[str]:
        """Record ``tool`` for ``family``; the family's earlier tools if ``tool`` is new to it
        (empty for a new family, or a tool the family already used)."""
        if not family:
            return []
        tools = self.families.get(family)
        if tools is None:
            self.families.put(family, [tool])
            return []
        if tool in tools:
            return []
        before = list(tools)
        tools.append(tool)
        del tools[: -self.tools_per_family]
        return before

    def _family_draft(
        self, obs: Observation, holder: str, org: str, tool: str, before: list[str]
    ) -> Draft:
        return Draft(
            detection=self.id,
            severity=Severity.MEDIUM,
            confidence=0.7,
            entity_type="family",
            entity=obs.family,
            explanation=(
                f"token family {obs.family} of {holder} was used with {', '.join(before)} "
                f"and is now used with {tool} (client {obs.client[:80]!r}), a tool {holder} "
                "has not used before"
            ),
            evidence=(obs.id,),
            techniques=self.techniques,
            principal=holder,
            org=org,
        )

    def _principal_draft(self, obs: Observation, holder: str, org: str, tool: str) -> Draft:
        known = sorted(self.tools.values(holder, obs.time - self.tools.ttl))
        others = [name for name in known if name != tool]
        return Draft(
            detection=self.id,
            severity=Severity.LOW,
            confidence=0.4,
            entity_type="principal",
            entity=holder,
            explanation=(
                f"{holder} used a new client tool {tool} (client {obs.client[:80]!r}); "
                f"known tools: {', '.join(others[:5]) or 'none'}"
            ),
            evidence=(obs.id,),
            techniques=self.techniques,
            principal=holder,
            org=org,
        )
