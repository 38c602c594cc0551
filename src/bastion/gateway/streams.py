"""Open responses, so that a lock can end the streams it covers while they are in flight.

Each forwarded response registers its caller, compartment and cancel scope. When a new snapshot
is swapped in, every open response is checked against its locks (the same O(1) check as a new
request) and cancelled if covered; the gateway then ends the stream with an error event.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

import anyio

from bastion.policy.authorize import Caller, check_locks
from bastion.policy.decision import Reason
from bastion.policy.snapshot import Snapshot


@dataclass(slots=True)
class OpenStream:
    caller: Caller
    compartment: str
    scope: anyio.CancelScope
    cut_reason: Reason | None = None
    client_gone: bool = False


class StreamRegistry:
    def __init__(self) -> None:
        self._open: dict[int, OpenStream] = {}
        self._ids = itertools.count()

    def __len__(self) -> int:
        return len(self._open)

    def open(self, stream: OpenStream) -> int:
        key = next(self._ids)
        self._open[key] = stream
        return key

    def close(self, key: int) -> None:
        self._open.pop(key, None)

    def on_swap(self, snapshot: Snapshot) -> None:
        """Cut every open response the new snapshot's locks cover."""
        if not self._open or not snapshot.locks:
            return
        now = time.time()
        for stream in list(self._open.values()):
            denied = check_locks(snapshot, stream.caller, stream.compartment, now)
            if denied is not None and stream.cut_reason is None:
                stream.cut_reason = denied.reasons[0]
                stream.scope.cancel()
