"""Transfers: a phone in a call passes its far end on, by REFER or by in-call feature codes:
what it may ask for and how the codes are told apart (pure), and the talk that hands either
to the flow (pbx.legs.Leg.taking_transfers, a TransferDesk)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from core.settings import FeatureCodeSettings
from ivr.dialplan import Dialled, plan_phone_call
from pbx.legs import Leg, LegGone, TransferRequest, WorkerCommandFailed


class TransferKind(StrEnum):
    BLIND = "blind"  # the target is rung once the transferring phone has let go
    ATTENDED = "attended"  # the phone has talked to the target first


@dataclass(frozen=True)
class Transfer:
    """An accepted transfer: the caller is to be connected to `target`."""

    by_extension: str
    by_user_id: int | None
    target: str  # an extension (a user's, a queue's or a menu's) or an external number
    external: bool = False
    post_dial: str = ""
    kind: TransferKind = TransferKind.BLIND
    # Attended: the target's leg, dialled (and mostly answered) while the caller waited.
    leg: Leg | None = None
    # Attended by REFER: the phone's leg of its consultation call, ended by the transfer.
    replaced: Leg | None = None


@dataclass(frozen=True)
class Refusal:
    """The phone keeps its call and shows this final answer for the transfer."""

    code: int
    reason: str


def judge_transfer(
    target: str,
    *,
    by_extension: str,
    by_user_id: int | None,
    extensions: frozenset[str],
    outbound_route: bool,
) -> Transfer | Refusal:
    """Pure: what a phone may transfer its caller to, by the Refer-To's user part (unescaped)
    -- the same numbers it may dial itself."""
    plan = plan_phone_call(target, by_extension, extensions)
    if plan.kind is Dialled.EXTENSION:
        return Transfer(by_extension, by_user_id, plan.target)
    if plan.kind is Dialled.EXTERNAL:
        if not outbound_route:
            return Refusal(403, "No outbound route")
        return Transfer(by_extension, by_user_id, plan.target, external=True,
                        post_dial=plan.post_dial)  # fmt: skip
    refusals = {
        Dialled.OWN_EXTENSION: Refusal(403, "Own extension"),
        Dialled.UNKNOWN_EXTENSION: Refusal(404, "Not Found"),
    }
    return refusals.get(plan.kind, Refusal(484, "Address Incomplete"))


def transfer_codes(codes: FeatureCodeSettings) -> dict[str, TransferKind]:
    """The in-call codes a talk listens for, by the transfer each starts."""
    return {
        codes.blind_transfer: TransferKind.BLIND,
        codes.attended_transfer: TransferKind.ATTENDED,
    }


# After a digit that may begin a feature code, the next must come within this (Asterisk's
# featuredigittimeout is 1 s; desk phones' keypads are slower than SIPp's).
FEATURE_DIGIT_TIMEOUT_S = 2.0


def feed_feature_digit(
    typed: str, digit: str, codes: dict[str, TransferKind]
) -> tuple[str, TransferKind | None]:
    """Pure: the digits typed so far that may still become a code, and the code's kind once
    they are one. A digit that cannot continue a code may begin one afresh."""
    for candidate in (typed + digit, digit):
        if candidate in codes:
            return "", codes[candidate]
        if any(code.startswith(candidate) for code in codes):
            return candidate, None
    return "", None


class TransferDesk(Protocol):
    """What a flow does for one phone in one talk: judge its REFERs, and carry out a
    transfer it asked for with keys (collect the target, consult for an attended one)."""

    async def judge(self, request: TransferRequest) -> Transfer | Refusal: ...

    def refused(self, request: TransferRequest, refusal: Refusal) -> None: ...

    async def by_keys(self, kind: TransferKind, caller: Leg, phone: Leg) -> Transfer | None: ...


async def talk_until_transfer(
    caller: Leg,
    phone: Leg,
    requests: asyncio.Queue[TransferRequest],
    desk: TransferDesk,
    codes: dict[str, TransferKind],
) -> Transfer | None:
    """The caller and `phone` talk until either leg ends (None) or the phone transfers: by a
    REFER (`requests`, from phone.taking_transfers) the desk accepts -- the phone is told
    "200 OK" -- or by a feature code in `codes` the desk carries out. The transfer is returned
    for the flow to end the phone's leg and connect the caller on. A refused request is
    answered with its code, and a transfer by keys that comes to nothing reconnects the two:
    the talk goes on."""
    try:
        return await _talk(caller, phone, requests, desk, codes)
    finally:
        # Asked while the talk ended (or was passed on by keys): the phone keeps no request
        # waiting for an answer that never comes.
        while not requests.empty():
            with contextlib.suppress(LegGone, WorkerCommandFailed):
                await phone.report_transfer(requests.get_nowait(), 603, "Decline")


async def _talk(
    caller: Leg,
    phone: Leg,
    requests: asyncio.Queue[TransferRequest],
    desk: TransferDesk,
    codes: dict[str, TransferKind],
) -> Transfer | None:
    typed = ""
    while True:
        asked = asyncio.ensure_future(requests.get())
        either: list[asyncio.Future[Any]] = [asked, caller.ended]
        stop = asyncio.ensure_future(asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED))
        try:
            digit = await phone.next_digit(FEATURE_DIGIT_TIMEOUT_S if typed else None, until=stop)
        finally:
            for waiting in (stop, asked):
                if not waiting.done():
                    waiting.cancel()  # an item it was about to take stays in the queue
        if caller.ended.done():
            return None
        request = asked.result() if asked.done() and not asked.cancelled() else None
        if request is None and not requests.empty():
            request = requests.get_nowait()
        if request is not None:
            # Also when the phone hung up right after asking, as many do after a REFER.
            transfer = await _answer_request(caller, phone, request, desk)
            if transfer is not None or caller.ended.done() or phone.ended.done():
                return transfer
        if phone.ended.done():
            return None
        if digit is None:
            typed = ""  # a code begun and not finished in time
            continue
        typed, kind = feed_feature_digit(typed, digit, codes)
        if kind is not None:
            transfer = await desk.by_keys(kind, caller, phone)
            if transfer is not None or caller.ended.done() or phone.ended.done():
                return transfer


async def _answer_request(
    caller: Leg, phone: Leg, request: TransferRequest, desk: TransferDesk
) -> Transfer | None:
    verdict = await desk.judge(request)
    if caller.ended.done():
        verdict = Refusal(487, "Request Terminated")
    if isinstance(verdict, Refusal):
        desk.refused(request, verdict)
        with contextlib.suppress(LegGone):
            await phone.report_transfer(request, verdict.code, verdict.reason)
        return None
    if verdict.leg is not None:
        verdict.leg.hand_on()  # the consultation's flow must not end it now
    # A phone that hung up in the meantime, or that is not told, has still asked: the
    # caller goes on (the flow that takes the transfer ends what it was handed).
    with contextlib.suppress(LegGone, WorkerCommandFailed):
        await phone.report_transfer(request, 200, "OK")
    return verdict
