"""Provisioning from scripts: `pbx users ...` and `pbx extensions assign`.

While the service runs, a command is a request to its REST API with the admin token `pbx run`
keeps in <data.dir>/admin-token: the running service makes the change, so its memory (the
call path's caches, chat assignment, queue rules) follows at once. While it is stopped, the
command calls the domain functions the REST routes call, after the same request models
validated its input. Either way checks, events and error codes are the API's: a refusal
prints the API's error body on stderr and exits 2 for bad input (the API's 422), 1 otherwise;
never a traceback."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import aiohttp
import click
import structlog
from pydantic import BaseModel, ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError

from acd.agents import register_writes as register_presence_writes
from api.cli_settings import command_settings, config_option
from api.errors import NumberOutOfRange, validation_failed
from api.routing import API_PREFIX
from api.users import (
    ExtensionAssign,
    ExtensionAssignment,
    UserCreate,
    UserOut,
    change_user,
)
from core.context import ServiceContext
from core.db import create_engine, create_session_factory
from core.errors import DomainError, InvalidInput, NotFound
from core.events import EventBus
from core.metrics import Metrics
from core.settings import Settings
from core.sql_bounds import SQL_INT_MAX
from core.wakeups import Wakeups
from core.write_behind import WriteBehind
from extensions import passwords, phones, users
from pbx.kamailio import KamailioRpc

log = structlog.get_logger(__name__)

# Exit statuses: the API's 422 (bad input) and every other refusal or failure.
EXIT_BAD_INPUT = 2
EXIT_REFUSED = 1
# users list reads this many at a time (the API's largest page).
LIST_PAGE = 500
# Where `pbx run` keeps the admin token it printed (in data.dir).
ADMIN_TOKEN_FILE = "admin-token"

Model = TypeVar("Model", bound=BaseModel)
Result = TypeVar("Result")


@click.group("users")
def users_commands() -> None:
    """Create, list and dismiss users."""


@click.group("extensions")
def extensions_commands() -> None:
    """Give users extensions (desk phones)."""


@users_commands.command("add")
@click.option("--name", required=True, help="Full name")
@click.option("--email", default=None, help="Email; one active user per email")
@click.option("--role", default="operator", show_default=True, help="admin, supervisor, operator")
@click.option("--json", "as_json", is_flag=True, help="Print the user as the API returns it")
@config_option
def add_user(name: str, email: str | None, role: str, as_json: bool, config: Path | None) -> None:
    """Create a user (POST /users)."""
    settings = command_settings(config)
    body = _valid(UserCreate, {"name": name, "email": email, "role": role})

    async def create(ctx: ServiceContext) -> UserOut:
        record = await users.create_user(
            ctx, name=body.name, email=body.email, role=body.role, wrap_up_time=None
        )
        return UserOut.of(record)

    async def post(service: RunningService) -> UserOut:
        return UserOut.model_validate(
            await service.request("POST", "/users", body.model_dump(mode="json"))
        )

    user = _perform(settings, post, create)
    click.echo(user.model_dump_json() if as_json else _user_line(user))


@users_commands.command("list")
@click.option("--active/--dismissed", default=None, help="Only active or only dismissed users")
@click.option("--json", "as_json", is_flag=True, help="A JSON array of users as the API has them")
@config_option
def list_users(active: bool | None, as_json: bool, config: Path | None) -> None:
    """List users, oldest first (GET /users, every page)."""
    settings = command_settings(config)

    async def every_user(ctx: ServiceContext) -> list[UserOut]:
        found: list[UserOut] = []
        while True:
            page, total = await users.list_users(
                ctx, active=active, limit=LIST_PAGE, offset=len(found)
            )
            found += [UserOut.of(r) for r in page]
            if not page or len(found) >= total:
                return found

    async def every_page(service: RunningService) -> list[UserOut]:
        found: list[UserOut] = []
        only = "" if active is None else f"&active={str(active).lower()}"
        while True:
            page = await service.request(
                "GET", f"/users?limit={LIST_PAGE}&offset={len(found)}{only}"
            )
            found += [UserOut.model_validate(u) for u in page["items"]]
            if not page["items"] or len(found) >= page["total"]:
                return found

    listed = _perform(settings, every_page, every_user)
    if as_json:
        click.echo(json.dumps([u.model_dump(mode="json") for u in listed]))
        return
    click.echo("\t".join(("id", "name", "email", "role", "active", "extension")))
    for user in listed:
        click.echo(_user_line(user))


@users_commands.command("dismiss")
@click.argument("user")
@click.option("--json", "as_json", is_flag=True, help="Print the user as the API returns it")
@config_option
def dismiss_user(user: str, as_json: bool, config: Path | None) -> None:
    """Dismiss USER (an id or an email), as PATCH /users/{id} {"active": false} does: phone
    unregistered, extension freed, tokens revoked, out of every queue and channel."""
    settings = command_settings(config)

    async def dismiss(ctx: ServiceContext) -> UserOut:
        user_id = await _user_id(ctx, user)
        return UserOut.of(await change_user(ctx, user_id, users.UserChanges(active=False)))

    async def patch(service: RunningService) -> UserOut:
        user_id = await service.user_id(user)
        changed = await service.request("PATCH", f"/users/{user_id}", {"active": False})
        return UserOut.model_validate(changed)

    dismissed = _perform(settings, patch, dismiss)
    click.echo(dismissed.model_dump_json() if as_json else f"dismissed {_user_line(dismissed)}")


@users_commands.command("password")
@click.argument("user")
@config_option
def set_password(user: str, config: Path | None) -> None:
    """Give USER (an id or an email) a password for the web console, as PUT
    /users/{id}/password does; their sessions end. The password is read from standard input
    (one line) when it is not a terminal, else asked for twice; never from the command line,
    where other users of the machine could see it."""
    settings = command_settings(config)
    if sys.stdin.isatty():
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    else:
        password = sys.stdin.readline().rstrip("\r\n")

    async def put(service: RunningService) -> None:
        user_id = await service.user_id(user)
        await service.request("PUT", f"/users/{user_id}/password", {"password": password})

    async def set_it(ctx: ServiceContext) -> None:
        await passwords.set_password(ctx, await _user_id(ctx, user), password)

    _perform(settings, put, set_it)
    click.echo("password set; the user's sessions have ended")


@extensions_commands.command("assign")
@click.argument("user")
@click.argument("extension")
@click.option("--json", "as_json", is_flag=True, help="Print the assignment as the API does")
@config_option
def assign_extension(user: str, extension: str, as_json: bool, config: Path | None) -> None:
    """Give USER (an id or an email) EXTENSION with new SIP credentials, as PUT
    /users/{id}/extension does. The password is printed this once."""
    settings = command_settings(config)
    body = _valid(ExtensionAssign, {"extension": extension})

    async def assign(ctx: ServiceContext) -> tuple[int, ExtensionAssignment]:
        user_id = await _user_id(ctx, user)
        account = await phones.assign_extension(ctx, user_id, body.extension)
        return user_id, ExtensionAssignment.of(account)

    async def put(service: RunningService) -> tuple[int, ExtensionAssignment]:
        user_id = await service.user_id(user)
        assignment = await service.request(
            "PUT", f"/users/{user_id}/extension", body.model_dump(mode="json")
        )
        return user_id, ExtensionAssignment.model_validate(assignment)

    user_id, assigned = _perform(settings, put, assign)
    if as_json:
        click.echo(assigned.model_dump_json())
        return
    sip = assigned.sip
    click.echo(f"user {user_id} has extension {assigned.extension}")
    if sip.password is None:
        click.echo("unchanged; the SIP password is not shown again (reset: POST "
                   f"/users/{user_id}/sip-password)")  # fmt: skip
        return
    click.echo(f"  username   {sip.username}")
    click.echo(f"  password   {sip.password}   (shown only now)")
    click.echo(f"  domain     {sip.domain}")
    click.echo(f"  registrar  {sip.registrar}")


# -- plumbing -----------------------------------------------------------------------------


def _valid(model: type[Model], fields: dict[str, Any]) -> Model:
    """The request model the API validates with, so the errors are the API's."""
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        _refuse(validation_failed(exc))


async def _user_id(ctx: ServiceContext, given: str) -> int:
    """USER arguments: digits are an id, anything else an email."""
    if given.isdecimal() or "@" not in given:
        return _given_id(given)
    return (await users.find_user_by_email(ctx, given)).id


def _given_id(given: str) -> int:
    if not given.isdecimal():
        raise InvalidInput(f"{given!r} is neither a user id nor an email", field="user")
    if int(given) > SQL_INT_MAX:
        raise NumberOutOfRange(f"user id {given} is out of range", field="user")
    return int(given)


class ApiRefused(Exception):
    """The running service answered with an error body."""

    def __init__(self, status: int, error: dict[str, Any]) -> None:
        super().__init__(error.get("message", f"HTTP {status}"))
        self.status = status
        self.error = error


@dataclass(frozen=True)
class RunningService:
    """The REST API of the `pbx run` that listens on api.host:port, as its admin."""

    base_url: str
    token: str

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with (
            aiohttp.ClientSession() as http,
            http.request(method, self.base_url + path, json=body, headers=headers) as reply,
        ):
            data = None if reply.status == 204 else await reply.json(content_type=None)
            if reply.status >= 400:
                error = data.get("error") if isinstance(data, dict) else None
                raise ApiRefused(
                    reply.status,
                    error or {"code": "unavailable", "message": f"HTTP {reply.status}"},
                )
            return data

    async def user_id(self, given: str) -> int:
        """USER arguments: digits are an id, anything else the email of an active user."""
        if given.isdecimal() or "@" not in given:
            return _given_id(given)
        offset = 0
        while True:
            page = await self.request(
                "GET", f"/users?active=true&limit={LIST_PAGE}&offset={offset}"
            )
            for user in page["items"]:
                if (user["email"] or "").lower() == given.lower():
                    return int(user["id"])
            offset += len(page["items"])
            if not page["items"] or offset >= page["total"]:
                raise NotFound(f"no active user has the email {given}", field="user")


def _running_service(settings: Settings) -> RunningService | None:
    """The service's API when something listens on api.host:port, else None (stopped)."""
    try:
        socket.create_connection((settings.api.host, settings.api.port), timeout=2).close()
    except OSError:
        return None
    token_file = settings.data_dir / ADMIN_TOKEN_FILE
    if not token_file.exists():
        _fail({"code": "unavailable", "message": f"something answers on {settings.api.host}:"
               f"{settings.api.port} but {token_file} (kept by pbx run) is missing"})  # fmt: skip
    base = f"http://{settings.api.host}:{settings.api.port}{API_PREFIX}"
    return RunningService(base, token_file.read_text().strip())


def _perform(
    settings: Settings,
    via_api: Callable[[RunningService], Coroutine[Any, Any, Result]],
    via_domain: Callable[[ServiceContext], Awaitable[Result]],
) -> Result:
    """Through the running service if there is one, else straight to the database."""
    service = _running_service(settings)
    if service is None:
        return _run(settings, via_domain)
    try:
        return asyncio.run(via_api(service))
    except ApiRefused as refused:
        _fail(refused.error, EXIT_BAD_INPUT if refused.status == 422 else EXIT_REFUSED)
    except DomainError as exc:
        _refuse(exc)
    except (aiohttp.ClientError, OSError) as exc:
        _refuse(OSError(f"the service at {service.base_url}: {exc}"))


def _run(settings: Settings, work: Callable[[ServiceContext], Awaitable[Result]]) -> Result:
    async def with_context() -> Result:
        async with _service_context(settings) as ctx:
            return await work(ctx)

    try:
        return asyncio.run(with_context())
    except (DomainError, DBAPIError, RedisError, OSError) as exc:
        _refuse(exc)


@asynccontextmanager
async def _service_context(settings: Settings) -> AsyncIterator[ServiceContext]:
    """What the domain functions need, as `pbx run` builds it (controller.plumbing), except
    the write-behind journal: the running service owns data/write-behind, so this process
    journals its few rows (a dismissal's presence history) in a folder of its own."""
    engine = create_engine(settings.database_url)
    sessions = create_session_factory(engine)
    redis = Redis.from_url(settings.redis_url)
    edge = KamailioRpc("127.0.0.1", settings.sip.rpc_port)
    metrics = Metrics()
    wakeups = Wakeups()
    events = EventBus(redis, metrics.events_published, wakeups)
    with tempfile.TemporaryDirectory(prefix="pbx-cli-") as journal:
        writes = WriteBehind(Path(journal), sessions, events, metrics)
        register_presence_writes(writes)
        ctx = ServiceContext(
            settings=settings, sessions=sessions, redis=redis, events=events, wakeups=wakeups,
            metrics=metrics, registrations=edge, writes=writes,
        )  # fmt: skip
        try:
            await writes.start()
            yield ctx
        finally:
            await writes.stop()
            await edge.close()
            await redis.aclose()
            await sessions.dispose()
            await engine.dispose()


def _refuse(error: Exception) -> NoReturn:
    """The API's error body on stderr and an exit status; nothing else escapes a command."""
    if isinstance(error, DomainError):
        body = {"code": error.code, "message": error.message, "field": error.field}
        bad_input = isinstance(error, InvalidInput)
        _fail(body | error.details, EXIT_BAD_INPUT if bad_input else EXIT_REFUSED)
    if isinstance(error, DBAPIError):
        log.error("cli_database_error", error=str(error.orig))
        _fail({"code": "database_error", "message": f"the database failed: {error.orig}"})
    log.error("cli_unavailable", error=str(error))
    _fail({"code": "unavailable", "message": f"a service is unreachable: {error}"})


def _fail(body: dict[str, Any], status: int = EXIT_REFUSED) -> NoReturn:
    click.echo(json.dumps({"error": body}), file=sys.stderr)
    sys.exit(status)


def _user_line(user: UserOut) -> str:
    fields = (user.id, user.name, user.email or "-", user.role.value, user.active,
              user.extension or "-")  # fmt: skip
    return "\t".join(str(f).lower() if isinstance(f, bool) else str(f) for f in fields)
