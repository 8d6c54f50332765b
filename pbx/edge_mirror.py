"""What an edge was last told of the media worker slots, and the fewest changes that bring
it to a new state. The pool drives its node's edge with it, and with media hosts a standby
node its own edge, after the active node's (controller.shared_edge)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

from pbx.kamailio import WorkerSlot


class WorkerEdge(Protocol):
    """The edge's list of workers and the calls it holds for them
    (pbx.kamailio.EdgeWorkerSet); each raises EdgeUnavailable."""

    async def install(self, slots: list[WorkerSlot], ready: Collection[str]) -> None: ...

    async def set_ready(self, uri: str, ready: bool) -> None: ...

    async def end_calls(self, uri: str) -> int: ...


class EdgeMirror:
    def __init__(self) -> None:
        # Each listed slot's URI, on or off; None: nothing installed yet.
        self._on: dict[str, bool] | None = None

    def forget(self) -> None:
        """The next update installs every slot again (the edge may list others now)."""
        self._on = None

    async def bring(
        self, edge: WorkerEdge, slots: list[WorkerSlot], ready: Collection[str]
    ) -> None:
        """Every slot at once the first time, and when slots the edge does not list appear
        (Kamailio reloads its list at most every 5 s); else one slot per change. Raises
        EdgeUnavailable, leaving what was done remembered."""
        if self._on is None or any(slot.uri not in self._on for slot in slots):
            await edge.install(slots, ready)
            self._on = {slot.uri: slot.uri in ready for slot in slots}
            return
        for uri, on in self._on.items():
            if on != (uri in ready):
                await edge.set_ready(uri, not on)
                self._on[uri] = not on
