"""What a flow test sets up over the REST API, with defaults: users with extensions, company
numbers, menus and queues (all new per test, so tests share one service)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.support.api_client import ApiClient

HANGUP: dict[str, Any] = {"type": "hangup"}
_numbers = itertools.count(4930900000)
_callers = itertools.count(4940100000)
_names = itertools.count(1)


@dataclass(frozen=True)
class User:
    id: int
    extension: str


def extension_to(user: User) -> dict[str, Any]:
    return {"type": "extension", "extension": user.extension}


def caller_number() -> str:
    """A calling number no other test of this session uses (to find its call record)."""
    return str(next(_callers))


async def user(
    admin: ApiClient, next_extension: Callable[[], str], *, status: str | None = None,
    reason: str | None = None,
) -> User:  # fmt: skip
    """A user with an extension (registered in the twin, as every twin phone is)."""
    made = await admin.new_user(f"Flow User {next(_names)}")
    extension = next_extension()
    await admin.assign(made["id"], extension)
    if status is not None:
        await set_presence(admin, made["id"], status, reason=reason)
    return User(made["id"], extension)


async def set_presence(
    admin: ApiClient, user_id: int, status: str, *, reason: str | None = None
) -> dict[str, Any]:
    body = {"status": status, **({"reason": reason} if reason else {})}
    reply = await admin.put(f"/users/{user_id}/presence", body)
    assert reply.status == 200, reply
    presence: dict[str, Any] = reply.body
    return presence


async def presence(admin: ApiClient, user_id: int) -> dict[str, Any]:
    body: dict[str, Any] = (await admin.get(f"/users/{user_id}/presence")).body
    return body


async def company_number(admin: ApiClient, default: dict[str, Any], **fields: Any) -> str:
    number = str(next(_numbers))
    reply = await admin.post("/numbers", {
        "number": number, "greeting": {"text": "Welcome."}, "default_destination": default,
        **fields,
    })  # fmt: skip
    assert reply.status == 201, reply
    return number


async def menu(admin: ApiClient, **fields: Any) -> int:
    reply = await admin.post("/menus", {
        "name": f"Menu {next(_names)}", "prompt": {"text": "Menu."}, **fields,
    })  # fmt: skip
    assert reply.status == 201, reply
    menu_id: int = reply.body["id"]
    return menu_id


async def queue(admin: ApiClient, members: list[User], **fields: Any) -> int:
    reply = await admin.post("/queues", {
        "name": f"Queue {next(_names)}", "members": [m.id for m in members],
        "announce_interval": 0, **fields,
    })  # fmt: skip
    assert reply.status == 201, reply
    queue_id: int = reply.body["id"]
    return queue_id


async def queue_log(admin: ApiClient, queue_id: int) -> list[tuple[str, int | None]]:
    items = (await admin.get("/queue-log", params={"queue_id": str(queue_id)})).body["items"]
    return [(item["event"], item["user_id"]) for item in items]


async def call_record(admin: ApiClient, call_id: int) -> dict[str, Any]:
    reply = await admin.get(f"/calls/{call_id}")
    assert reply.status == 200, reply
    record: dict[str, Any] = reply.body
    return record
