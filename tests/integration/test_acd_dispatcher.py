"""The dispatcher under fire (real Redis, real SQL, the service's own dispatcher), and
presence surviving a Redis restart."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from pathlib import Path

from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from acd import agents
from acd.dispatcher import Dispatcher, Entry
from acd.presence import Presence, Status, answered, call_ended, offer_withdrawn
from acd.presence_store import PresenceStore
from api.routing import CONTEXT_KEY, CONTROLLER_KEY
from core.redis_server import ManagedRedis
from tests.support.api_client import ApiClient
from tests.support.ports import free_port

RACE_SECONDS = 6.0


async def test_no_agent_is_ever_offered_two_callers_at_once(
    admin: ApiClient, api_server: TestServer, next_extension: Callable[[], str]
) -> None:
    """Many callers in overlapping queues, agents toggling ready/not_ready in a loop: every
    offer handed out is checked against the offers still open."""
    ctx = api_server.app[CONTEXT_KEY]
    dispatcher: Dispatcher = api_server.app[CONTROLLER_KEY].dispatcher
    team = []
    for i in range(8):
        user = await admin.new_user(f"Racer {i}")
        await admin.assign(user["id"], next_extension())
        await agents.choose(ctx, user["id"], "ready", reason=None, message=None, by="test")
        team.append(user["id"])
    queue_ids = []
    for strategy, members in (("ring_all", team[:5]), ("evenly", team[3:]),
                              ("round_robin", team[::2]), ("in_order", team)):  # fmt: skip
        reply = await admin.post("/queues", {"name": f"Race {strategy}", "members": members,
                                             "strategy": strategy})  # fmt: skip
        queue_ids.append(reply.body["id"])

    rng = random.Random(42)
    ringing: dict[int, int] = {}  # agent -> entry holding its offer
    violations: list[str] = []
    offers = 0

    stop = asyncio.Event()

    async def caller(entry: Entry) -> None:
        nonlocal offers
        while not stop.is_set():
            try:
                offer = await asyncio.wait_for(entry.offers.get(), 0.1)
            except TimeoutError:
                continue
            offers += 1
            for target in offer.agents:
                if target.user_id in ringing:
                    violations.append(f"agent {target.user_id} offered to {entry.id} while "
                                      f"ringing for {ringing[target.user_id]}")  # fmt: skip
                ringing[target.user_id] = entry.id
            await asyncio.sleep(rng.uniform(0, 0.02))
            winner = offer.agents[0].user_id if rng.random() < 0.5 else None
            for target in offer.agents:
                del ringing[target.user_id]
                if target.user_id == winner:
                    # Cleared from `ringing` first: after answering it is "in call", and the
                    # presence (not this map) must keep further offers away.
                    await agents.change_presence(ctx, winner, answered, "race")
                    await asyncio.sleep(rng.uniform(0, 0.01))
                    await agents.change_presence(
                        ctx, winner, lambda p: call_ended(p, acd=False, wrap_up_seconds=0,
                                                          now=0.0), "race")  # fmt: skip
                else:
                    await agents.change_presence(ctx, target.user_id, offer_withdrawn, "race")
            dispatcher.offer_over(entry, [])

    async def toggler(user_id: int) -> None:
        while not stop.is_set():
            status = rng.choice(["ready", "ready", "not_ready"])
            await agents.choose(ctx, user_id, status, reason="break" if status == "not_ready"
                                else None, message=None, by="race")  # fmt: skip
            await asyncio.sleep(rng.uniform(0.005, 0.05))

    entries = [dispatcher.join(queue_ids[i % len(queue_ids)], 900_000 + i) for i in range(40)]
    tasks = [asyncio.create_task(caller(e)) for e in entries]
    tasks += [asyncio.create_task(toggler(u)) for u in team]
    await asyncio.sleep(RACE_SECONDS)
    stop.set()  # no cancellation in the middle of a Redis transaction
    async with asyncio.timeout(10):
        await asyncio.gather(*tasks)
    for entry in entries:
        await dispatcher.leave(entry)
    for user_id in team:
        await agents.change_presence(ctx, user_id, lambda _p: Presence(), "race over")
    for queue_id in queue_ids:
        await admin.delete(f"/queues/{queue_id}")
    assert not violations, violations[:5]
    assert offers > 50, f"only {offers} offers: the race did not run"


async def test_presence_survives_a_redis_restart(tmp_path: Path) -> None:
    port = free_port()
    server = ManagedRedis("127.0.0.1", port, tmp_path / "redis")
    await server.start()
    client = Redis.from_url(server.url)
    store = PresenceStore(client)
    wrapping = Presence(Status.WRAP_UP, message="notes", wrap_up_until=1_900_000_000.0)
    on_break = Presence(Status.NOT_READY, reason="break", message="back at 3")
    await store.update(1, lambda _p: wrapping)
    await store.update(2, lambda _p: on_break)
    await client.aclose()
    await server.stop()
    server = ManagedRedis("127.0.0.1", port, tmp_path / "redis")  # as the next run would
    await server.start()
    client = Redis.from_url(server.url)
    try:
        store = PresenceStore(client)
        got = await store.get_many([1, 2])
        assert (got[1].status, got[1].message, got[1].wrap_up_until) == (
            Status.WRAP_UP, "notes", 1_900_000_000.0)  # fmt: skip
        assert (got[2].status, got[2].reason, got[2].message) == (
            Status.NOT_READY, "break", "back at 3")  # fmt: skip
        assert await store.known_agents() == [1, 2]
    finally:
        await client.aclose()
        await server.stop()
