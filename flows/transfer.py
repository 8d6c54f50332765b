"""Transfers: a phone in a call passes its far end on (REFER): what it may ask for (pure), and
the talk that hands the phone's request to the flow (pbx.legs.Leg.taking_transfers)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ivr.dialplan import Dialled, plan_phone_call
from pbx.legs import Leg, LegGone, TransferRequest


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


Judge = Callable[[TransferRequest], Awaitable[Transfer | Refusal]]
OnRefused = Callable[[TransferRequest, Refusal], None]


async def talk_until_transfer(
    caller: Leg,
    phone: Leg,
    requests: asyncio.Queue[TransferRequest],
    judge: Judge,
    on_refused: OnRefused,
) -> Transfer | None:
    """The caller and `phone` talk until either leg ends (None) or the phone asks for a
    transfer (`requests`, from phone.taking_transfers) that `judge` accepts: the phone is told
    "200 OK" and the transfer returned, for the flow to end the phone's leg and connect the
    caller on. A refused request is answered with its code and the talk goes on."""
    while True:
        asked = asyncio.ensure_future(requests.get())
        watched: list[asyncio.Future[Any]] = [caller.ended, phone.ended, asked]
        try:
            await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not asked.done():
                asked.cancel()
        if caller.ended.done() or phone.ended.done() or asked.cancelled():
            return None
        request = asked.result()
        verdict = await judge(request)
        if caller.ended.done():
            verdict = Refusal(487, "Request Terminated")
        if isinstance(verdict, Refusal):
            on_refused(request, verdict)
            with contextlib.suppress(LegGone):
                await phone.report_transfer(request, verdict.code, verdict.reason)
            if caller.ended.done() or phone.ended.done():
                return None
            continue
        # A phone that hung up in the meantime has still asked: the caller goes on.
        with contextlib.suppress(LegGone):
            await phone.report_transfer(request, 200, "OK")
        return verdict
