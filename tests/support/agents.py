"""Agents as the ACD tests need them: a user with a registered desk phone and a presence."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from tests.support.api_client import ApiClient
from tests.support.phone import TestCall, TestPhone


@dataclass
class Agent:
    phone: TestPhone
    extension: str
    user_id: int

    async def rings(self, timeout: float = 10.0) -> TestCall:
        return await self.phone.next_incoming(timeout=timeout)

    def idle(self) -> bool:
        return self.phone.incoming.empty()


MakeAgent = Callable[..., Awaitable[Agent]]


async def set_status(admin: ApiClient, agent: Agent, status: str, **extra: Any) -> dict[str, Any]:
    body = {"status": status, **{k: v for k, v in extra.items() if v is not None}}
    reply = await admin.put(f"/users/{agent.user_id}/presence", body)
    assert reply.status == 200, reply
    presence: dict[str, Any] = reply.body
    return presence


async def presence(admin: ApiClient, agent: Agent) -> dict[str, Any]:
    body: dict[str, Any] = (await admin.get(f"/users/{agent.user_id}/presence")).body
    return body


async def eventually_presence(
    admin: ApiClient, agent: Agent, timeout: float = 10.0, **expected: Any
) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            current = await presence(admin, agent)
            if all(current[key] == value for key, value in expected.items()):
                return current
            await asyncio.sleep(0.1)
