"""A dead media worker's calls are ended at the edge: which RPC each dialog gets (by its
state), and how the pool asks for it (its slot waits, a failing edge is only logged)."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import Any

import pytest

from core.metrics import Metrics
from core.settings import WorkerSettings
from pbx.kamailio import (
    ANSWER_CALLER_PATH,
    CANCEL_RING_PATH,
    COUNTED_HEADER,
    WORKER_PROFILE,
    KamailioRpc,
    KamailioRpcError,
    WorkerSlot,
)
from pbx.legs import Leg
from pbx.memory_worker import MemoryWorkers
from pbx.pool import RESIZE_COALESCE_S, WorkerPool

WORKER_URI = "sip:127.0.0.1:5080"
WORKER_SETTINGS = WorkerSettings(max_workers=1, spare_legs=2)


def dialog(state: int, h_id: int, *, to_worker: bool = True) -> dict[str, Any]:
    """A dialog as Kamailio's dlg.profile_list lists it (the fields read here). A call the
    dispatcher sent to the worker names it in a dialog variable; one it placed has none."""
    return {
        "h_entry": 7, "h_id": h_id, "call-id": f"call-{h_id}", "state": state,
        "caller": {"tag": "from-tag", "cseq": "42"}, "callee": {"tag": None},
        "variables": [{WORKER_PROFILE: WORKER_URI}] if to_worker else [],
    }  # fmt: skip


class ScriptedRpc(KamailioRpc):
    """Answers dlg.profile_list with `listed`; records every other call and every request to
    the edge script's paths, failing those named in `failures` with that error."""

    def __init__(self, listed: Any, failures: dict[str, KamailioRpcError] | None = None) -> None:
        super().__init__("127.0.0.1", 1)
        self.listed = listed
        self.failures = failures or {}
        self.calls: list[tuple[Any, ...]] = []

    async def call(self, method: str, *params: Any) -> Any:
        if method == "dlg.profile_list":
            assert params == (WORKER_PROFILE, WORKER_URI)
            return self.listed
        return self._record(method, *params)

    async def _edge_script(self, path: str, body: str) -> None:
        self._record(path, body)

    def _record(self, name: str, *params: Any) -> None:
        self.calls.append((name, *params))
        if name in self.failures:
            raise self.failures[name]


async def test_answered_calls_get_a_bye_and_unanswered_ones_an_answer_or_a_cancel() -> None:
    rpc = ScriptedRpc([
        dialog(4, 1), dialog(3, 2, to_worker=False),
        dialog(2, 3), dialog(1, 4, to_worker=False),
        dialog(5, 5),  # already ending: left alone
    ])  # fmt: skip
    assert await rpc.end_worker_calls(WORKER_URI) == 4
    assert rpc.calls == [
        # The BYE to the worker of a call the dispatcher counted takes it off the count.
        ("dlg.end_dlg", 7, 1, f"{COUNTED_HEADER}: 1\r\n"),
        ("dlg.end_dlg", 7, 2),
        # The caller of the dead worker is answered; the phone it rang is CANCELled.
        (ANSWER_CALLER_PATH, "42,call-3"),
        (CANCEL_RING_PATH, "42,call-4"),
    ]


async def test_one_dialog_or_none_as_jsonrpcs_answers_them() -> None:
    assert await ScriptedRpc(dialog(4, 1)).end_worker_calls(WORKER_URI) == 1
    assert await ScriptedRpc([]).end_worker_calls(WORKER_URI) == 0
    assert await ScriptedRpc(None).end_worker_calls(WORKER_URI) == 0


async def test_a_call_that_ended_meanwhile_is_not_counted_and_others_still_end() -> None:
    gone = KamailioRpcError("Kamailio RPC dlg.end_dlg: Dialog not found", code=404)
    rpc = ScriptedRpc([dialog(4, 1), dialog(2, 2)], failures={"dlg.end_dlg": gone})
    assert await rpc.end_worker_calls(WORKER_URI) == 1
    assert [name for name, *_ in rpc.calls] == ["dlg.end_dlg", ANSWER_CALLER_PATH]


async def test_a_refusal_skips_one_call_and_no_answer_stops_them_all() -> None:
    refused = KamailioRpcError("Kamailio /answer-caller: HTTP 500", code=500)
    rpc = ScriptedRpc([dialog(2, 1), dialog(4, 2)], failures={ANSWER_CALLER_PATH: refused})
    assert await rpc.end_worker_calls(WORKER_URI) == 1
    unreachable = KamailioRpcError("Kamailio RPC dlg.end_dlg failed: ClientOSError()")
    rpc = ScriptedRpc([dialog(4, 1), dialog(4, 2)], failures={"dlg.end_dlg": unreachable})
    with pytest.raises(KamailioRpcError):
        await rpc.end_worker_calls(WORKER_URI)
    assert len(rpc.calls) == 1


class GatedEdge:
    """The twin's edge, whose end_calls waits for the test (or fails)."""

    def __init__(self, twin: MemoryWorkers, failure: Exception | None = None) -> None:
        self.twin = twin
        self.gate = asyncio.Event()
        self.failure = failure
        self.asked: list[str] = []

    async def install(self, slots: list[WorkerSlot], ready: Collection[str]) -> None:
        await self.twin.edge.install(slots, ready)

    async def set_ready(self, uri: str, ready: bool) -> None:
        await self.twin.edge.set_ready(uri, ready)

    async def end_calls(self, uri: str) -> int:
        self.asked.append(uri)
        self.twin.changed()
        await self.gate.wait()
        if self.failure is not None:
            raise self.failure
        return 2


async def lose_worker_with_a_call(
    edge: GatedEdge, twin: MemoryWorkers, metrics: Metrics
) -> WorkerPool:
    """A pool of one worker slot, whose worker dies with a call up."""
    inbound: asyncio.Queue[Leg] = asyncio.Queue()
    pool = WorkerPool(
        WORKER_SETTINGS, trusted=[], on_inbound=inbound.put, edge=edge, launcher=twin,
        metrics=metrics,
    )  # fmt: skip
    await pool.start()
    twin.call_in("4930777", "4930700")
    leg = await inbound.get()
    await leg.answer()
    await pool.kill_worker_for_test(leg.worker_id)
    await twin.until(lambda: len(edge.asked) == 1)
    return pool


async def test_the_pool_has_the_edge_end_a_dead_workers_calls_before_its_slot_is_reused() -> None:
    metrics = Metrics()
    twin = MemoryWorkers()
    edge = GatedEdge(twin)
    pool = await lose_worker_with_a_call(edge, twin, metrics)
    try:
        assert edge.asked == [f"sip:127.0.0.1:{WORKER_SETTINGS.first_sip_port}"]
        # A replacement would share the dead worker's URI: its calls would be ended too. The
        # pool would have started it within one resize round; give it several.
        await asyncio.sleep(RESIZE_COALESCE_S * 5)
        assert pool.workers == []
        edge.gate.set()
        await twin.until(lambda: len(pool.workers) == 1)
        assert metrics.registry.get_sample_value("pbx_dead_worker_calls_ended_total") == 2
    finally:
        edge.gate.set()
        await pool.stop()


async def test_an_edge_that_cannot_end_them_is_logged_and_the_slot_freed() -> None:
    metrics = Metrics()
    twin = MemoryWorkers()
    edge = GatedEdge(twin, failure=KamailioRpcError("Kamailio RPC dlg.profile_list failed"))
    edge.gate.set()
    pool = await lose_worker_with_a_call(edge, twin, metrics)
    try:
        await twin.until(lambda: len(pool.workers) == 1)
        assert metrics.registry.get_sample_value("pbx_dead_worker_calls_ended_total") == 0
    finally:
        await pool.stop()
