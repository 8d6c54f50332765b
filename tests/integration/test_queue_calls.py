"""Queues end to end: SIPp callers through the edge wait in queues; registered PJSUA2 agent
phones are offered the calls according to strategy and presence."""

from __future__ import annotations

import array
import asyncio
import itertools
import statistics
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from api.routing import CONTEXT_KEY, CONTROLLER_KEY
from core.settings import Settings
from ivr.prompts import cached_speech_path
from tests.integration.test_calls import wait_for_call
from tests.integration.test_media_workers import tone_strength
from tests.support.agents import Agent, MakeAgent, eventually_presence, presence, set_status
from tests.support.api_client import ApiClient
from tests.support.ports import free_port
from tests.support.sipp import (
    SippResult,
    SippServer,
    call_number,
    desk_phone_scenario,
    register_sipp_phone,
)

_numbers = itertools.count(4930600000)
# More than the 3 legs a worker has for agents besides its caller.
RING_ALL_TEAM = 5
_names = itertools.count(1)


async def queue_line(admin: ApiClient, members: list[Agent], **fields: Any) -> tuple[int, str]:
    """A queue and a company number whose callers go straight into it: (queue id, number)."""
    reply = await admin.post("/queues", {
        "name": f"Queue {next(_names)}", "members": [m.user_id for m in members],
        "wrap_up_time": 0, "announce_interval": 0, **fields,
    })  # fmt: skip
    assert reply.status == 201, reply
    number = str(next(_numbers))
    line = await admin.post("/numbers", {
        "number": number, "greeting": {"text": "Hello."}, "extension_dialing": False,
        "default_destination": {"type": "queue", "id": reply.body["id"]},
    })  # fmt: skip
    assert line.status == 201, line
    return reply.body["id"], number


def caller(
    settings: Settings, folder: Path, number: str, **options: Any
) -> asyncio.Task[SippResult]:
    return asyncio.create_task(call_number(folder, settings.sip.port, number, **options))


async def queue_events(admin: ApiClient, queue_id: int) -> list[tuple[str, int | None]]:
    items = (await admin.get("/queue-log", params={"queue_id": str(queue_id)})).body["items"]
    return [(item["event"], item["user_id"]) for item in items]


async def eventually_logged(
    admin: ApiClient, queue_id: int, event: str, timeout: float = 10.0
) -> list[tuple[str, int | None]]:
    async with asyncio.timeout(timeout):
        while True:
            events = await queue_events(admin, queue_id)
            if any(kind == event for kind, _ in events):
                return events
            await asyncio.sleep(0.1)


async def test_in_order_rings_the_first_member_then_the_next_on_no_answer(
    admin: ApiClient, settings: Settings, agent: MakeAgent, tmp_path: Path
) -> None:
    first = await agent("First In Line", auto_answer=None)
    second = await agent("Second In Line")
    queue_id, number = await queue_line(admin, [first, second], strategy="in_order",
                                        ring_timeout=5)  # fmt: skip
    sipp = caller(settings, tmp_path, number, stay_s=9.0)
    unanswered = await first.rings()
    assert (await presence(admin, first))["activity"] == "ringing"
    assert second.idle()
    await asyncio.wait_for(unanswered.ended, 8)
    answered = await second.rings()
    await asyncio.wait_for(answered.answered, 5)
    assert (await sipp).succeeded
    events = await eventually_logged(admin, queue_id, "complete")
    assert events == [
        ("enter", None),
        ("offer", first.user_id),
        ("no_answer", first.user_id),
        ("offer", second.user_id),
        ("connect", second.user_id),
        ("complete", second.user_id),
    ]
    # One miss (of 2 allowed) leaves the agent ready.
    await eventually_presence(admin, first, status="ready", activity="idle")
    record = await wait_for_call(admin, party=second.extension)
    assert record["disposition"] == "answered" and record["user_id"] == second.user_id


async def test_missed_offers_in_a_row_make_the_agent_not_ready(
    admin: ApiClient, settings: Settings, agent: MakeAgent, tmp_path: Path
) -> None:
    sleepy = await agent("Sleepy Agent", auto_answer=None)
    _, number = await queue_line(admin, [sleepy], ring_timeout=5)
    sipp = caller(settings, tmp_path, number, stay_s=14.0)
    for _ in range(2):
        await asyncio.wait_for((await sleepy.rings(timeout=12)).ended, 8)
    state = await eventually_presence(admin, sleepy, status="not_ready")
    assert state["reason"] == "missed calls"
    await asyncio.sleep(2.0)
    assert sleepy.idle(), "a not_ready agent must not ring again"
    assert (await sipp).succeeded


async def test_ring_all_rings_everyone_and_cancels_the_losers(
    admin: ApiClient, settings: Settings, next_extension: Callable[[], str], tmp_path: Path
) -> None:
    """More phones than a worker has legs ring at once: the edge forks one leg to each (SIPp
    desk phones, each a process of its own); the one that answers is told apart by its
    Contact, the others are CANCELled and free again."""
    winner = 2
    team: list[tuple[int, str]] = []  # (user id, extension)
    phones: list[SippServer] = []
    try:
        for i in range(RING_ALL_TEAM):
            user = await admin.new_user(f"Ring All {i}")
            extension = next_extension()
            sip = (await admin.assign(user["id"], extension))["sip"]
            port = free_port()
            registered = await register_sipp_phone(
                tmp_path, settings.sip.port, extension, sip["password"], settings.sip.domain,
                port,
            )  # fmt: skip
            assert registered.succeeded, registered.output
            scenario = desk_phone_scenario(extension, 1.0 if i == winner else None)
            phones.append(await SippServer.start(tmp_path, f"desk-{extension}", scenario, port))
            reply = await admin.put(f"/users/{user['id']}/presence", {"status": "ready"})
            assert reply.status == 200, reply
            team.append((user["id"], extension))
        queue_id, number = await queue_line(admin, [], strategy="ring_all")
        members = {"members": [user_id for user_id, _ in team]}
        assert (await admin.patch(f"/queues/{queue_id}", members)).status == 200
        sipp = caller(settings, tmp_path, number, stay_s=4.0)
        results = await asyncio.wait_for(asyncio.gather(*(p.result() for p in phones)), 20)
        for result in results:  # the winner got its BYE, the others their CANCEL
            assert result.succeeded, result.output
        assert (await sipp).succeeded
    finally:
        for each in phones:
            await each.stop()
    events = await eventually_logged(admin, queue_id, "complete")
    assert ("connect", team[winner][0]) in events
    assert not any(kind == "no_answer" for kind, _ in events)
    record = await wait_for_call(admin, direction="inbound", party=number)
    assert (record["connected_to"], record["user_id"]) == (team[winner][1], team[winner][0])
    for user_id, _ in team:
        reply = await admin.get(f"/users/{user_id}/presence")
        assert reply.body["activity"] == "idle", reply.body
        await admin.put(f"/users/{user_id}/presence", {"status": "logged_out"})


async def test_evenly_offers_the_longest_idle_agent_first(
    admin: ApiClient, settings: Settings, agent: MakeAgent, tmp_path: Path
) -> None:
    rested = await agent("Rested Agent")
    busy_earlier = await agent("Just Back Agent")  # ready later: idle for less time
    _, number = await queue_line(admin, [busy_earlier, rested], strategy="evenly")
    sipp = caller(settings, tmp_path, number, stay_s=1.0)
    await rested.rings()
    assert busy_earlier.idle()
    assert (await sipp).succeeded


async def test_round_robin_continues_after_the_last_agent_offered(
    admin: ApiClient, settings: Settings, agent: MakeAgent, tmp_path: Path
) -> None:
    team = [await agent(f"Robin {i}") for i in range(2)]
    _, number = await queue_line(admin, team, strategy="round_robin")
    for expected in (team[0], team[1], team[0]):
        sipp = caller(settings, tmp_path, number, stay_s=0.5)
        await expected.rings()
        assert (await sipp).succeeded
        await eventually_presence(admin, expected, activity="idle")
    assert all(member.idle() for member in team)


async def test_fewest_calls_prefers_the_agent_with_fewer_answered_calls(
    admin: ApiClient, settings: Settings, agent: MakeAgent, tmp_path: Path
) -> None:
    worked = await agent("Worked Agent")
    fresh = await agent("Fresh Agent", status=None)
    _, number = await queue_line(admin, [worked, fresh], strategy="fewest_calls")
    sipp = caller(settings, tmp_path, number, stay_s=0.5)
    await worked.rings()
    assert (await sipp).succeeded
    await eventually_presence(admin, worked, activity="idle")
    await set_status(admin, fresh, "ready")  # idle for less time, but fewer calls
    sipp = caller(settings, tmp_path, number, stay_s=0.5)
    await fresh.rings()
    assert worked.idle()
    assert (await sipp).succeeded


async def test_random_rings_one_free_member(
    admin: ApiClient, settings: Settings, agent: MakeAgent, tmp_path: Path
) -> None:
    team = [await agent(f"Dice {i}", auto_answer=None) for i in range(2)]
    _, number = await queue_line(admin, team, strategy="random")
    sipp = caller(settings, tmp_path, number, stay_s=2.0)
    done, pending = await asyncio.wait(
        [asyncio.ensure_future(m.rings()) for m in team], timeout=10,
        return_when=asyncio.FIRST_COMPLETED,
    )  # fmt: skip
    for waiting in pending:
        waiting.cancel()
    assert len(done) == 1
    assert (await sipp).succeeded


async def test_not_ready_dnd_and_away_members_are_skipped(
    admin: ApiClient, settings: Settings, agent: MakeAgent, tmp_path: Path
) -> None:
    on_break = await agent("On Break", status="not_ready", reason="break")
    focused = await agent("Focused", status="dnd")
    away = await agent("Away", status="away")
    ready = await agent("The Ready One")
    _, number = await queue_line(admin, [on_break, focused, away, ready], strategy="in_order")
    sipp = caller(settings, tmp_path, number, stay_s=1.0)
    await ready.rings()
    assert (await sipp).succeeded
    assert on_break.idle() and focused.idle() and away.idle()


async def answer_one_call(
    admin: ApiClient, settings: Settings, folder: Path, number: str, worker: Agent
) -> Any:
    """A short queue call the (only) agent answers; their presence once wrap-up has begun."""
    sipp = caller(settings, folder, number, stay_s=0.5)
    await worker.rings()
    assert (await sipp).succeeded
    return await eventually_presence(admin, worker, status="wrap_up")


async def test_wrap_up_blocks_offers_until_it_ends(
    admin: ApiClient, settings: Settings, agent: MakeAgent, tmp_path: Path
) -> None:
    worker = await agent("Wrapping Agent")
    _, number = await queue_line(admin, [worker], wrap_up_time=4)
    wrapping = await answer_one_call(admin, settings, tmp_path, number, worker)
    assert wrapping["wrap_up_until"] is not None
    second = caller(settings, tmp_path, number, stay_s=6.0)
    await asyncio.sleep(2.5)
    assert worker.idle(), "no ACD call during wrap-up"
    await worker.rings(timeout=8)  # wrap-up ran out: ready again
    assert (await second).succeeded


async def test_wrap_up_ended_early_by_the_agent(
    admin: ApiClient, settings: Settings, agent: MakeAgent, tmp_path: Path
) -> None:
    worker = await agent("Quick Wrapper")
    _, number = await queue_line(admin, [worker], wrap_up_time=600)
    await answer_one_call(admin, settings, tmp_path, number, worker)
    second = caller(settings, tmp_path, number, stay_s=5.0)
    await asyncio.sleep(2.5)
    assert worker.idle()
    await set_status(admin, worker, "ready")
    await worker.rings(timeout=5)
    assert (await second).succeeded


async def test_an_agents_own_wrap_up_time_overrides_the_queues(
    admin: ApiClient, settings: Settings, agent: MakeAgent, tmp_path: Path
) -> None:
    worker = await agent("Fast Wrapper")
    assert (await admin.patch(f"/users/{worker.user_id}", {"wrap_up_time": 2})).status == 200
    _, number = await queue_line(admin, [worker], wrap_up_time=600)
    await answer_one_call(admin, settings, tmp_path, number, worker)
    second = caller(settings, tmp_path, number, stay_s=1.0)
    await worker.rings(timeout=8)  # after 2 s, not the queue's 10 minutes
    assert (await second).succeeded


async def test_caller_abandoning_while_agents_ring(
    admin: ApiClient, settings: Settings, agent: MakeAgent, tmp_path: Path
) -> None:
    slow = await agent("Slow Agent", auto_answer=None)
    queue_id, number = await queue_line(admin, [slow], ring_timeout=30)
    sipp = caller(settings, tmp_path, number, stay_s=1.5)
    ringing = await slow.rings()
    assert (await sipp).succeeded
    assert await asyncio.wait_for(ringing.ended, 5) == 487
    events = await eventually_logged(admin, queue_id, "abandon")
    assert ("no_answer", slow.user_id) not in events
    state = await eventually_presence(admin, slow, status="ready", activity="idle")
    assert state["reason"] is None
    assert (await wait_for_call(admin, party=number))["disposition"] == "abandoned"


@pytest.mark.parametrize("answered", [False, True], ids=["ringing", "answered"])
async def test_a_dead_workers_calls_are_ended_by_the_edge_for_both_phones(
    admin: ApiClient, settings: Settings, agent: MakeAgent, api_server: TestServer,
    tmp_path: Path, answered: bool,
) -> None:  # fmt: skip
    """kill -9 of the worker holding a queue call: the caller gets a BYE from the edge, the
    agent's phone a BYE once it answered, a CANCEL while it still rang."""
    member = await agent("Agent Of A Dying Worker", auto_answer=200 if answered else None)
    queue_id, number = await queue_line(admin, [member], ring_timeout=60)
    # No pause after the ACK: SIPp would take the edge's BYE during one for a stray message.
    sipp = caller(settings, tmp_path, number, hang_up="remote", digits_after_s=0.0,
                  timeout_s=20)  # fmt: skip
    offer = await member.rings()
    if answered:
        await asyncio.wait_for(offer.answered, 5)
        await eventually_logged(admin, queue_id, "connect")
    pool = api_server.app[CONTROLLER_KEY].pool
    assert pool is not None
    (worker,) = [w for w in pool.workers if w.legs_in_use]
    metrics = api_server.app[CONTEXT_KEY].metrics.registry
    ended_before = metrics.get_sample_value("pbx_dead_worker_calls_ended_total") or 0
    await pool.kill_worker_for_test(worker.id)
    # Nothing but the edge is left to end them: the worker that held both legs is gone.
    assert (await asyncio.wait_for(sipp, 5)).succeeded, "the caller got no BYE"
    if answered:
        assert await asyncio.wait_for(offer.ended, 5) == 200
        assert offer.progress.ending_request.startswith("BYE "), "the agent got no BYE"
    else:
        assert await asyncio.wait_for(offer.ended, 5) == 487, "the agent's ring was not CANCELled"
    ended = metrics.get_sample_value("pbx_dead_worker_calls_ended_total")
    assert ended == ended_before + 2
    await eventually_logged(admin, queue_id, "failed")
    await eventually_presence(admin, member, status="ready", activity="idle")


async def test_max_wait_sends_the_caller_to_overflow(
    admin: ApiClient, settings: Settings, agent: MakeAgent, tmp_path: Path
) -> None:
    absent = await agent("Absent Member", status="not_ready", reason="meeting")
    backup = await agent("Overflow Desk", status=None)
    queue_id, number = await queue_line(
        admin, [absent], max_wait=2, when_no_agents="wait",
        overflow={"type": "extension", "extension": backup.extension},
    )  # fmt: skip
    sipp = caller(settings, tmp_path, number, stay_s=6.0)
    await backup.rings(timeout=10)
    assert (await sipp).succeeded
    events = await eventually_logged(admin, queue_id, "timeout")
    assert [kind for kind, _ in events] == ["enter", "timeout"]


async def test_nobody_logged_in_goes_to_overflow_at_once(
    admin: ApiClient, settings: Settings, agent: MakeAgent, tmp_path: Path
) -> None:
    gone = await agent("Logged Out Member", status="logged_out")
    backup = await agent("Night Desk", status=None)
    queue_id, number = await queue_line(
        admin, [gone], overflow={"type": "extension", "extension": backup.extension},
    )  # fmt: skip
    sipp = caller(settings, tmp_path, number, stay_s=3.0)
    await backup.rings(timeout=8)
    assert (await sipp).succeeded
    logged = await eventually_logged(admin, queue_id, "no_agents")
    assert [kind for kind, _ in logged] == ["no_agents"]


async def test_exit_key_leaves_the_queue(
    admin: ApiClient, settings: Settings, agent: MakeAgent, tmp_path: Path
) -> None:
    absent = await agent("Busy Member", status="not_ready", reason="break")
    backup = await agent("Exit Desk", status=None)
    queue_id, number = await queue_line(
        admin, [absent], exit_key="0", when_no_agents="wait",
        overflow={"type": "extension", "extension": backup.extension},
    )  # fmt: skip
    sipp = caller(settings, tmp_path, number, digits="0", digits_after_s=2.5, stay_s=3.0)
    await backup.rings(timeout=10)
    assert (await sipp).succeeded
    logged = await eventually_logged(admin, queue_id, "exit_key")
    assert [kind for kind, _ in logged] == ["enter", "exit_key"]


async def test_status_asked_for_during_a_call_applies_after_it(
    admin: ApiClient, settings: Settings, agent: MakeAgent, tmp_path: Path
) -> None:
    talker = await agent("Talking Agent")
    _, number = await queue_line(admin, [talker], wrap_up_time=30)
    sipp = caller(settings, tmp_path, number, stay_s=3.0)
    await talker.rings()
    await eventually_presence(admin, talker, activity="in_call")
    asked = await set_status(admin, talker, "not_ready", reason="lunch")
    assert asked["status"] == "ready" and asked["pending"]["status"] == "not_ready"
    assert (await sipp).succeeded
    after = await eventually_presence(admin, talker, status="not_ready", activity="idle")
    assert after["reason"] == "lunch" and after["pending"] is None  # and no wrap-up


async def test_agent_on_an_internal_call_is_skipped(
    admin: ApiClient, settings: Settings, agent: MakeAgent, tmp_path: Path
) -> None:
    chatting = await agent("Chatting Agent")
    colleague = await agent("Colleague", status=None)
    free = await agent("Free Agent")
    _, number = await queue_line(admin, [chatting, free], strategy="in_order")
    internal = await chatting.phone.call(
        f"sip:{colleague.extension}@{settings.sip.host}:{settings.sip.port}"
    )
    await asyncio.wait_for(internal.answered, 10)
    await eventually_presence(admin, chatting, activity="in_call")
    sipp = caller(settings, tmp_path, number, stay_s=1.0)
    await free.rings()
    assert (await sipp).succeeded
    assert chatting.idle()
    await internal.hangup()
    await eventually_presence(admin, chatting, status="ready", activity="idle")


async def test_queue_extension_dialled_during_the_greeting(
    admin: ApiClient, settings: Settings, agent: MakeAgent, tmp_path: Path,
    next_extension: Callable[[], str],
) -> None:  # fmt: skip
    member = await agent("Queue By Extension")
    extension = next_extension()
    queue = await admin.post("/queues", {
        "name": "Dialled queue", "extension": extension, "members": [member.user_id],
        "announce_interval": 0,
    })  # fmt: skip
    assert queue.status == 201
    number = str(next(_numbers))
    assert (await admin.post("/numbers", {
        "number": number, "greeting": {"text": "Dial an extension."},
        "default_destination": {"type": "hangup"},
    })).status == 201  # fmt: skip
    sipp = caller(settings, tmp_path, number, digits=extension + "#", stay_s=1.5)
    await member.rings()
    assert (await sipp).succeeded


async def test_feature_codes_set_presence_from_the_desk_phone(
    admin: ApiClient, settings: Settings, agent: MakeAgent
) -> None:
    desk = await agent("Feature Agent", status="ready")
    codes = settings.feature_codes
    for code, expected in ((codes.not_ready, "not_ready"), (codes.ready, "ready"),
                           (codes.logged_out, "logged_out")):  # fmt: skip
        call = await desk.phone.call(f"sip:{code}@{settings.sip.host}:{settings.sip.port}")
        await asyncio.wait_for(call.answered, 10)
        await asyncio.wait_for(call.ended, 10)  # the confirmation, then the service hangs up
        state = await presence(admin, desk)
        assert state["status"] == expected, (code, state)
    assert state["reason"] is None
    await set_status(admin, desk, "wrap_up")
    call = await desk.phone.call(f"sip:{codes.end_wrap_up}@{settings.sip.host}:{settings.sip.port}")
    await asyncio.wait_for(call.ended, 10)
    assert (await presence(admin, desk))["status"] == "ready"


async def test_overflow_into_the_queues_voicemail_box(
    admin: ApiClient, settings: Settings, agent: MakeAgent, tmp_path: Path
) -> None:
    absent = await agent("Voicemail Queue Member", status="logged_out")
    queue_id, number = await queue_line(admin, [absent])
    owner = {"type": "queue", "id": queue_id}
    box = await admin.post("/voicemail/boxes", {"owner": owner, "greeting": {"text": "Hi."}})
    assert box.status == 201, box
    overflow = {"type": "voicemail", "box": box.body["id"]}
    patched = await admin.patch(f"/queues/{queue_id}", {"overflow": overflow})
    assert patched.status == 200, patched
    # Nobody logged in: straight to the box; the silent caller's message ends on silence.
    result = await call_number(tmp_path, settings.sip.port, number, hang_up="remote",
                               timeout_s=30)  # fmt: skip
    assert result.succeeded, result.output
    messages = (await admin.get(f"/voicemail/boxes/{box.body['id']}/messages")).body["items"]
    assert len(messages) == 1
    # The box is in use by the queue's overflow: it cannot be deleted.
    refused = await admin.delete(f"/voicemail/boxes/{box.body['id']}")
    assert refused.status == 409 and refused.body["error"]["references"]["queues"] == [queue_id]


async def test_position_is_announced_while_waiting(
    admin: ApiClient, settings: Settings, agent: MakeAgent, tmp_path: Path
) -> None:
    busy = await agent("Announce Member", status="not_ready", reason="break")
    queue_id, number = await queue_line(admin, [busy], when_no_agents="wait",
                                        announce_interval=2)  # fmt: skip
    text = "You are number 1 in the queue."
    announcement = cached_speech_path(settings.data_dir / "prompts", text, settings.prompts.voice)
    announcement.unlink(missing_ok=True)
    sipp = caller(settings, tmp_path, number, stay_s=4.5)
    assert (await sipp).succeeded
    assert announcement.exists(), "the position announcement was never spoken"
    events = [kind for kind, _ in await eventually_logged(admin, queue_id, "abandon")]
    assert events == ["enter", "abandon"]


async def test_a_caller_on_the_priority_line_is_served_before_an_older_caller(
    admin: ApiClient, settings: Settings, agent: MakeAgent, tmp_path: Path
) -> None:
    """Two SIPp callers through the edge wait for one agent: the one who came later, on a
    number whose queue destination sets priority 5, is offered the agent first."""
    member = await agent("Priority Member", status="not_ready", reason="break")
    queue_id, plain = await queue_line(admin, [member], when_no_agents="wait")
    urgent = str(next(_numbers))
    line = await admin.post("/numbers", {
        "number": urgent, "greeting": {"text": "Hello."}, "extension_dialing": False,
        "default_destination": {"type": "queue", "id": queue_id, "priority": 5},
    })  # fmt: skip
    assert line.status == 201, line
    older = caller(settings, tmp_path, plain, stay_s=20.0, caller="4930111001")
    await eventually_logged(admin, queue_id, "enter")
    later = caller(settings, tmp_path, urgent, stay_s=4.0, caller="4930111002")
    async with asyncio.timeout(10):
        while len([e for e, _ in await queue_events(admin, queue_id) if e == "enter"]) < 2:
            await asyncio.sleep(0.1)

    await set_status(admin, member, "ready")
    first = await member.rings()
    await asyncio.wait_for(first.answered, 5)
    await eventually_logged(admin, queue_id, "connect")  # the log is written behind the call
    items = (await admin.get("/queue-log", params={"queue_id": str(queue_id)})).body["items"]
    offers = [item["detail"] for item in items if item["event"] == "offer"]
    entries = [item["detail"] for item in items if item["event"] == "enter"]
    assert [o["caller"] for o in offers] == ["4930111002"], offers
    assert [(e["priority"], e["position"]) for e in entries] == [(0, 1), (5, 1)]
    assert (await later).succeeded  # hangs up; no wrap-up: the agent is free for the next
    await asyncio.wait_for((await member.rings(timeout=15)).answered, 5)
    assert (await older).succeeded


async def test_a_recorded_queue_call_is_downloaded_with_the_agents_voice_in_it(
    admin: ApiClient, settings: Settings, agent: MakeAgent, tmp_path: Path
) -> None:
    """Through the edge: the queue records, the SIPp caller speaks a 440 Hz tone, the agent's
    phone answers with its 600 Hz one, and the WAV an admin downloads holds both voices."""
    member = await agent("Recorded Member")
    queue_id, number = await queue_line(admin, [member], record_calls=True)
    sipp = caller(settings, tmp_path, number, stay_s=3.0, caller="4930111003", tone_hz=440)
    await asyncio.wait_for((await member.rings()).answered, 5)
    assert (await sipp).succeeded
    await eventually_logged(admin, queue_id, "complete")
    async with asyncio.timeout(10):
        while True:
            calls = await admin.get("/calls", params={"party": "4930111003", "recorded": "true"})
            if calls.body["items"]:
                break
            await asyncio.sleep(0.1)
    (record,) = calls.body["items"]
    assert 1.0 < record["recording_seconds"] < 5.0, record
    url = f"{admin.base_url}/calls/{record['id']}/recording"
    async with admin.session.get(url, headers={"Authorization": f"Bearer {admin.token}"}) as got:
        assert got.status == 200 and got.content_type == "audio/wav"
        wav = await got.read()
    path = tmp_path / "downloaded.wav"
    path.write_bytes(wav)
    with wave.open(str(path)) as audio:
        samples = array.array("h", audio.readframes(audio.getnframes()))
    # Per tenth of a second: SIPp's stream is not phase-continuous over the whole call.
    windows = [samples[i : i + 800] for i in range(0, len(samples) - 799, 800)]
    for frequency, whose in ((600, "the agent's voice"), (440, "the caller's voice")):
        assert statistics.median(tone_strength(w, frequency) for w in windows) > 0.05, whose
