"""Supervision: a supervisor listens to an agent's live call, whispers to the agent (the caller
does not hear it) or barges in (both do), as Asterisk's ChanSpy and Wazo do. The service rings
the supervisor's phone from the call's media worker; once answered, that leg hears the talk
(pbx.protocol.Monitor), and the keys 4, 5 and 6 on it switch between listen, whisper and barge.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import structlog

from core.errors import Conflict, NotFound
from pbx.legs import Leg, LegGone, WorkerCommandFailed

log = structlog.get_logger(__name__)


class SupervisionMode(StrEnum):
    LISTEN = "listen"  # hears both, heard by nobody
    WHISPER = "whisper"  # heard by the agent only
    BARGE = "barge"  # heard by both


# Keys the supervisor presses to change the mode (ChanSpy's DTMF cycle, made explicit).
MODE_KEYS = {"4": SupervisionMode.LISTEN, "5": SupervisionMode.WHISPER,
             "6": SupervisionMode.BARGE}  # fmt: skip


class NoLiveTalk(NotFound):
    code = "no_live_talk"


class NoRoomToSupervise(Conflict):
    code = "no_room"


@dataclass(frozen=True)
class Talk:
    """A call connected to one of our users' phones now."""

    call_id: int
    other: Leg  # whom the agent talks to: the caller, or the number the agent dialled
    agent: Leg  # the agent's phone leg
    user_id: int | None  # the agent


class LiveTalks:
    """The calls talking now, by call id (a flow registers each while it talks)."""

    def __init__(self) -> None:
        self._by_call: dict[int, Talk] = {}

    @contextlib.contextmanager
    def talking(self, talk: Talk) -> Iterator[None]:
        self._by_call[talk.call_id] = talk
        try:
            yield
        finally:
            if self._by_call.get(talk.call_id) is talk:
                del self._by_call[talk.call_id]

    def of_user(self, user_id: int) -> Talk:
        for talk in self._by_call.values():
            if talk.user_id == user_id and not talk.agent.ended.done():
                return talk
        raise NoLiveTalk(f"user {user_id} is not in a call now")

    def of_call(self, call_id: int) -> Talk:
        talk = self._by_call.get(call_id)
        if talk is None or talk.other.ended.done() or talk.agent.ended.done():
            raise NoLiveTalk(f"call {call_id} is not connected to anyone now")
        return talk


async def supervise(
    talk: Talk, supervisor: Leg, mode: SupervisionMode, keys: Leg | None = None
) -> SupervisionMode | None:
    """Once the supervisor's leg answers, it hears the talk in `mode` until either side of the
    talk or the supervisor hangs up; the supervisor's leg is hung up then. The mode keys come
    from `keys` (default: the supervisor's leg; the phone's own leg when `supervisor` is a
    link to it). Returns the first mode heard (None: the supervisor never answered)."""
    keys = keys or supervisor
    ended: list[asyncio.Future[Any]] = [
        supervisor.ended, keys.ended, talk.other.ended, talk.agent.ended,
    ]  # fmt: skip
    try:
        await asyncio.wait([supervisor.answered, *ended], return_when=asyncio.FIRST_COMPLETED)
        if not supervisor.answered.done() or any(f.done() for f in ended):
            return None
        await supervisor.monitor(talk.other, talk.agent, mode.value)
        first = mode
        log.info("call_supervised", call_id=talk.call_id, mode=mode.value)
        any_ended = asyncio.ensure_future(asyncio.wait(ended, return_when=asyncio.FIRST_COMPLETED))
        try:
            while not any(f.done() for f in ended):
                key = await keys.next_digit(None, until=any_ended)
                if key in MODE_KEYS and MODE_KEYS[key] is not mode:
                    mode = MODE_KEYS[key]
                    await supervisor.monitor(talk.other, talk.agent, mode.value)
                    log.info("supervision_mode_changed", call_id=talk.call_id, mode=mode.value)
        finally:
            any_ended.cancel()
        return first
    except (LegGone, WorkerCommandFailed):
        return None
    finally:
        await supervisor.drop()
