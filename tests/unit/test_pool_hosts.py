"""The pool's workers on several media hosts (WorkerPool.add_host / remove_host), on in-memory
workers: new workers spread over the hosts; a lost host's legs end while the other's go on;
the edge lists every slot once and only switches them; hosts it cannot take are refused."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

import pytest

from core.settings import WorkerSettings
from pbx.capacity import WorkerState
from pbx.channel import WorkerHost, WorkerSpec
from pbx.legs import WORKER_LOST, Leg
from pbx.memory_worker import MemoryWorkers
from pbx.pool import AdoptedWorker, WorkerPool
from pbx.protocol import Answer, Bridge, Command, Detach, Dial

SETTINGS = WorkerSettings(max_workers=2, spare_legs=8, first_sip_port=5080)
HOSTS = ["10.0.0.4", "10.0.0.5"]


def place(name: str, address: str, **changes: int) -> WorkerHost:
    fields = {"first_sip_port": 5080, "first_rtp_port": 20000, "rtp_ports_per_worker": 40,
              "max_workers": 2} | changes  # fmt: skip
    return WorkerHost(name, address, **fields)


async def test_workers_spread_over_hosts_and_a_lost_host_ends_only_its_legs() -> None:
    # The twin's far ends pick a worker by SIP port; each host gets a twin of its own.
    twins = {"m1": MemoryWorkers(prompt_seconds=None), "m2": MemoryWorkers(prompt_seconds=None)}
    edge = twins["m1"].edge
    inbound: asyncio.Queue[Leg] = asyncio.Queue()
    pool = WorkerPool(SETTINGS, trusted=[], on_inbound=inbound.put, edge=edge,
                      media_hosts=HOSTS)  # fmt: skip
    await pool.start()
    try:
        assert pool.workers == [] and pool.max_workers == 0
        pool.add_host(place("m1", HOSTS[0]), twins["m1"])
        pool.add_host(place("m2", HOSTS[1]), twins["m2"])
        await twins["m1"].until(lambda: pool.spare_legs >= SETTINGS.spare_legs and all(
            w.state is WorkerState.READY for w in pool.workers
        ))  # fmt: skip
        on = {name: [w.id for w in pool.workers if w.host == name] for name in twins}
        assert len(on["m1"]) == len(on["m2"]) >= 1  # spread evenly
        assert min(on["m1"]) == 10_000 and min(on["m2"]) == 20_000
        # Every slot on every host, listed once: 2 hosts x max_workers.
        assert len(edge.slots) == 4 and edge.installs == 1

        legs = {}
        for name, twin in twins.items():
            twin.call_in("4930777", "4930700")
            legs[name] = await asyncio.wait_for(inbound.get(), 5)
            await legs[name].answer()

        # m1 is lost: its link closes (its workers' channels end), and it leaves the pool.
        for worker in [w for w in pool.workers if w.host == "m1"]:
            await pool.kill_worker_for_test(worker.id)
        pool.remove_host("m1")
        end = await asyncio.wait_for(legs["m1"].ended, 5)
        assert end.reason == WORKER_LOST
        assert not legs["m2"].ended.done()
        await twins["m2"].until(lambda: all(w.host == "m2" for w in pool.workers))
        assert pool.hosts == ["m2"] and pool.max_workers == 2
        # Its slot is off at the edge, no reload.
        assert edge.installs == 1 and f"sip:{HOSTS[0]}:5080" not in edge.ready

        pool.add_host(place("m1", HOSTS[0]), twins["m1"])  # back, with its old worker ids
        await twins["m1"].until(lambda: any(w.host == "m1" for w in pool.workers))
        assert min(w.id for w in pool.workers if w.host == "m1") == 10_000
        assert edge.installs == 1
    finally:
        await pool.stop()


@pytest.mark.parametrize(
    ("host", "problem"),
    [
        (place("m9", "10.0.0.9"), "not a media host of this node"),
        (place("m1", HOSTS[0], first_sip_port=6000), "SIP ports are not the edge's"),
        (place("m1", HOSTS[0], max_workers=3), "SIP ports are not the edge's"),
        (place("m1", HOSTS[1]), "in the pool already"),  # the same name elsewhere
        (place("m3", HOSTS[0]), "in the pool already"),  # the same address, another name
    ],
)
async def test_a_host_the_edge_cannot_take_calls_from_is_refused(
    host: WorkerHost, problem: str
) -> None:
    twin = MemoryWorkers()
    pool = WorkerPool(SETTINGS, trusted=[], on_inbound=lambda leg: asyncio.sleep(0),
                      edge=twin.edge, media_hosts=HOSTS)  # fmt: skip
    pool.add_host(place("m1", HOSTS[0]), twin)
    with pytest.raises(ValueError, match=problem):
        pool.add_host(host, twin)


class HostWithBusyPort(MemoryWorkers):
    """A media host on which a lost controller's worker still holds the first port."""

    def __init__(self) -> None:
        super().__init__()
        self.busy = {5080}
        self._on_available = lambda: None

    async def start(self, on_available: Callable[[], None]) -> None:
        self._on_available = on_available

    def can_launch_on(self, sip_port: int) -> bool:
        return sip_port not in self.busy

    def free(self, sip_port: int) -> None:
        self.busy.discard(sip_port)
        self._on_available()


async def test_no_worker_starts_on_a_port_a_detached_worker_holds_until_it_is_free() -> None:
    host = HostWithBusyPort()
    pool = WorkerPool(WorkerSettings(max_workers=2, spare_legs=8, first_sip_port=5080),
                      trusted=[], on_inbound=lambda leg: asyncio.sleep(0), edge=host.edge,
                      media_hosts=HOSTS)  # fmt: skip
    await pool.start()
    try:
        pool.add_host(place("m1", HOSTS[0]), host)
        await host.until(lambda: len(pool.workers) == 1 and pool.spare_legs > 0)
        assert [w.sip_port for w in pool.workers] == [5081]  # 8 spare legs want two
        host.free(5080)
        await host.until(lambda: sorted(w.sip_port for w in pool.workers) == [5080, 5081])
    finally:
        await pool.stop()


async def test_a_new_pool_takes_over_a_detached_worker_with_its_calls() -> None:
    """A worker a lost controller left detached on a host: its bridged pair and its waiting
    caller are handed to the new pool's on_adopted (one call each), the phone that still
    rang was hung up at Detach, and the worker is the pool's, on its old slot."""
    twin = MemoryWorkers(prompt_seconds=None)
    worker = await twin.launch(WorkerSpec(10_000, 5080, 20000, 8))
    cids = itertools.count(1)

    async def send(make: Callable[[int], Command]) -> None:
        """As the lost controller did; what follows a result (an ACK) happens too."""
        await worker.send(make(next(cids)))
        await asyncio.sleep(0.01)

    talking, waiting, ringing = (
        worker.incoming(f"sip:49301{n}@edge", "sip:4930700@10.0.0.4", {}) for n in range(3)
    )
    assert talking is not None and waiting is not None and ringing is not None
    for caller in (talking, waiting):
        await send(lambda cid, leg=caller.leg_id: Answer(cid=cid, leg=leg))
    await send(lambda cid: Dial(cid=cid, leg="w10000-oold.1", parent=talking.leg_id,
                                uri="sip:1001@edge"))  # fmt: skip
    agent = await twin.dialled()
    agent.answer()
    await send(lambda cid: Bridge(cid=cid, a=talking.leg_id, b=agent.leg_id))
    await send(lambda cid: Detach(cid=cid))
    assert ringing.ended.done() and not waiting.ended.done() and not agent.ended.done()

    calls: list[tuple[Leg, Leg | None]] = []

    async def adopted(leg: Leg, peer: Leg | None) -> None:
        calls.append((leg, peer))

    pool = WorkerPool(SETTINGS, trusted=[], on_inbound=lambda leg: asyncio.sleep(0),
                      on_adopted=adopted, edge=twin.edge, media_hosts=HOSTS)  # fmt: skip
    await pool.start()
    try:
        pool.add_host(place("m1", HOSTS[0]), twin, [AdoptedWorker(10_000, 5080, worker)])
        await twin.until(lambda: len(calls) == 2)
        pair, alone = sorted(calls, key=lambda call: call[1] is None)
        assert (pair[0].id, pair[1] and pair[1].id) == (talking.leg_id, agent.leg_id)
        assert (alone[0].id, alone[1]) == (waiting.leg_id, None)
        assert all(leg.answered.done() for leg in (pair[0], alone[0]))
        adopted_worker = next(w for w in pool.workers if w.id == 10_000)
        assert (adopted_worker.state, adopted_worker.sip_port) == (WorkerState.READY, 5080)
        assert adopted_worker.legs_in_use == 3
        # The new controller drives the worker as its own: the waiting caller hangs up.
        waiting.hang_up()
        await twin.until(lambda: alone[0].ended.done())
    finally:
        await pool.stop()


async def test_a_worker_that_is_not_the_slots_is_not_taken_over() -> None:
    twin = MemoryWorkers()
    worker = await twin.launch(WorkerSpec(10_001, 5080, 20000, 8))  # slot 0 is id 10000
    pool = WorkerPool(SETTINGS, trusted=[], on_inbound=lambda leg: asyncio.sleep(0),
                      edge=twin.edge, media_hosts=HOSTS)  # fmt: skip
    await pool.start()
    try:
        pool.add_host(place("m1", HOSTS[0]), twin, [AdoptedWorker(10_001, 5080, worker)])
        await twin.until(lambda: worker.closed)  # its channel closed: it hangs up and exits
    finally:
        await pool.stop()
