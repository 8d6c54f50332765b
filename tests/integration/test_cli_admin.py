"""`pbx users ...` and `pbx extensions assign` against the suite's migrated database: the API's
checks and error codes, the events, exit statuses for scripts. Plain (not async) tests: each
command runs its own event loop, as it does from a shell."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog
from aiohttp.test_utils import TestServer
from click.testing import CliRunner, Result

from api.cli import main
from api.cli_admin import ADMIN_TOKEN_FILE
from core.redis_server import ManagedRedis
from core.settings import Settings
from tests.conftest import ADMIN_TOKEN, EMPTY_CONFIG
from tests.support.ports import free_port
from tests.support.sql import execute

Pbx = Callable[..., Result]
_emails = itertools.count()


def command_line(settings: Settings, database: str, api_port: int, stdin: str | None) -> Pbx:
    """Runs `pbx ARGS` with the suite's settings, as a script on the same machine would."""
    # Only these settings: the suite's own PBX_TEST_* variables are no settings keys.
    env: dict[str, str | None] = dict.fromkeys(k for k in os.environ if k.startswith("PBX_"))
    env |= {
        "PBX_DATA__DIR": str(settings.data_dir),
        "PBX_DATABASE__URL": database,
        "PBX_REDIS__PORT": str(settings.redis.port),
        "PBX_SIP__RPC_PORT": str(settings.sip.rpc_port),
        "PBX_API__PORT": str(api_port),
        "PBX_LOG__LEVEL": "error",
    }

    def run(*args: str, stdin: str | None = stdin) -> Result:
        return CliRunner().invoke(main, [*args, "--config", str(EMPTY_CONFIG)], env=env,
                                  input=stdin)  # fmt: skip

    return run


@pytest.fixture(autouse=True)
def suite_logging() -> Iterator[None]:
    """The commands run in the test process and configure its logging (without caching
    loggers): the suite's configuration comes back after each test, so that the other tests'
    captures of the service's log lines still see them."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture
def pbx(settings: Settings, database: str, redis_server: ManagedRedis) -> Pbx:
    """The commands while the service is stopped: nothing listens on their API port."""
    return command_line(settings, database, free_port(), None)


@pytest.fixture
def pbx_running(settings: Settings, database: str, api_server: TestServer) -> Pbx:
    """The commands while the service runs: its API answers on api.port, and its admin token
    is where `pbx run` keeps it."""
    (settings.data_dir / ADMIN_TOKEN_FILE).write_text(ADMIN_TOKEN + "\n")
    return command_line(settings, database, settings.api.port, None)


def email() -> str:
    return f"cli-{next(_emails)}@example.com"


def error_of(result: Result) -> dict[str, Any]:
    """The API's error body, the last line on stderr."""
    assert result.exception is None or isinstance(result.exception, SystemExit), result
    body: dict[str, Any] = json.loads(result.stderr.strip().splitlines()[-1])["error"]
    return body


def events_about(database: str, type_: str) -> list[dict[str, Any]]:
    rows = asyncio.run(execute(database, "SELECT data FROM events WHERE type = :t", t=type_))
    return [json.loads(data) if isinstance(data, str) else data for (data,) in rows]


def test_a_user_is_added_listed_given_an_extension_and_dismissed(pbx: Pbx, database: str) -> None:
    address = email()
    added = pbx("users", "add", "--name", "Cli Anna", "--email", address, "--json")
    assert added.exit_code == 0, added.output
    user = json.loads(added.stdout)
    assert user["name"] == "Cli Anna" and user["role"] == "operator" and user["active"]
    assert user["id"] in [e["id"] for e in events_about(database, "user_created")]

    listed = pbx("users", "list", "--json")
    assert listed.exit_code == 0, listed.output
    assert next(u for u in json.loads(listed.stdout) if u["id"] == user["id"]) == user
    table = pbx("users", "list", "--active").stdout.splitlines()
    assert table[0].split("\t") == ["id", "name", "email", "role", "active", "extension"]
    assert f"{user['id']}\tCli Anna\t{address}\toperator\ttrue\t-" in table

    number = "7301"
    assigned = pbx("extensions", "assign", address, number)
    assert assigned.exit_code == 0, assigned.output
    assert f"user {user['id']} has extension {number}" in assigned.stdout
    password = next(line.split()[1] for line in assigned.stdout.splitlines()
                    if line.strip().startswith("password"))  # fmt: skip
    assert len(password) >= 16
    again = pbx("extensions", "assign", str(user["id"]), number, "--json")
    assert json.loads(again.stdout)["sip"]["password"] is None  # shown once only
    assert {"extension": number, "holder": {"type": "user", "id": user["id"]}} in events_about(
        database, "extension_assigned"
    )

    dismissed = pbx("users", "dismiss", address, "--json")
    assert dismissed.exit_code == 0, dismissed.output
    assert json.loads(dismissed.stdout)["active"] is False
    assert user["id"] in [e["id"] for e in events_about(database, "user_dismissed")]
    released = {"extension": number, "holder": {"type": "user", "id": user["id"]}}
    assert released in events_about(database, "extension_released")
    gone = pbx("users", "list", "--dismissed", "--json")
    assert user["id"] in [u["id"] for u in json.loads(gone.stdout)]


def test_a_second_active_user_with_an_email_is_refused(pbx: Pbx) -> None:
    address = email()
    assert pbx("users", "add", "--name", "First", "--email", address).exit_code == 0
    twice = pbx("users", "add", "--name", "Second", "--email", address.upper())
    assert twice.exit_code == 1
    assert error_of(twice) | {"message": ""} == {
        "code": "email_taken", "message": "", "field": "email"
    }  # fmt: skip


@pytest.mark.parametrize(
    ("args", "code", "field"),
    [
        (("users", "add", "--name", " "), "validation_error", "name"),
        (("users", "add", "--name", "X", "--email", "not-an-email"), "validation_error", "email"),
        (("users", "add", "--name", "X", "--role", "boss"), "validation_error", "role"),
        (("extensions", "assign", "1", "12345"), "validation_error", "extension"),
        (("extensions", "assign", "1", "1a"), "validation_error", "extension"),
        (("extensions", "assign", "9" * 25, "1001"), "number_out_of_range", "user"),
        (("extensions", "assign", "nobody", "1001"), "invalid", "user"),
        (("users", "dismiss", "anna"), "invalid", "user"),
    ],
)
def test_bad_input_exits_2_with_the_apis_error(
    pbx: Pbx, args: tuple[str, ...], code: str, field: str
) -> None:
    result = pbx(*args)
    assert result.exit_code == 2, result.output
    error = error_of(result)
    assert (error["code"], error["field"]) == (code, field)
    assert "Traceback" not in result.output


def test_an_unknown_user_or_a_taken_extension_exits_1(pbx: Pbx) -> None:
    for args in (("users", "dismiss", "999999"), ("extensions", "assign", email(), "7302")):
        unknown = pbx(*args)
        assert unknown.exit_code == 1, unknown.output
        assert error_of(unknown)["code"] == "not_found"
    holder = json.loads(pbx("users", "add", "--name", "Holder", "--json").stdout)
    other = json.loads(pbx("users", "add", "--name", "Other", "--json").stdout)
    assert pbx("extensions", "assign", str(holder["id"]), "7303").exit_code == 0
    taken = pbx("extensions", "assign", str(other["id"]), "7303")
    assert taken.exit_code == 1 and error_of(taken)["code"] == "extension_taken"


def test_a_password_is_read_from_standard_input_never_the_command_line(pbx: Pbx) -> None:
    added = json.loads(pbx("users", "add", "--name", "Pia", "--email", email(), "--json").stdout)
    done = pbx("users", "password", str(added["id"]), stdin="a long enough password\n")
    assert done.exit_code == 0, done.output
    short = pbx("users", "password", str(added["id"]), stdin="short\n")
    assert short.exit_code == 2
    assert error_of(short)["code"] == "weak_password"


async def test_while_the_service_runs_the_commands_go_through_its_api(
    pbx_running: Pbx, database: str
) -> None:
    # The service answers on this test's event loop: each command runs in a thread meanwhile.
    async def pbx(*args: str, stdin: str | None = None) -> Result:
        return await asyncio.to_thread(pbx_running, *args, stdin=stdin)

    address = email()
    added = await pbx("users", "add", "--name", "Rita", "--email", address, "--json")
    assert added.exit_code == 0, added.output
    user = json.loads(added.stdout)
    assigned = await pbx("extensions", "assign", address, "7311", "--json")
    assert assigned.exit_code == 0, assigned.output
    assert json.loads(assigned.stdout)["sip"]["password"]
    password = await pbx("users", "password", address, stdin="a long enough password\n")
    assert password.exit_code == 0, password.output
    # The API's refusals come back as they are: 422 exits 2, a conflict 1.
    taken = await pbx("users", "add", "--name", "Rita again", "--email", address)
    assert (taken.exit_code, error_of(taken)["code"]) == (1, "email_taken")
    weak = await pbx("users", "password", address, stdin="short\n")
    assert (weak.exit_code, error_of(weak)["code"]) == (2, "weak_password")
    dismissed = await pbx("users", "dismiss", address, "--json")
    assert json.loads(dismissed.stdout)["active"] is False
    unknown = await pbx("users", "dismiss", address)
    assert (unknown.exit_code, error_of(unknown)["code"]) == (1, "not_found")
    # The running service made the changes: its events say so.
    assert user["id"] in [
        e["user_id"] for e in await asyncio.to_thread(events_about, database, "user_password_set")
    ]
