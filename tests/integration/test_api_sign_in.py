"""People sign in to the web console: passwords, session cookies, CSRF, sign-out, lockout, and
sessions that end with a dismissal or a new password; bearer tokens work as before."""

from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.cookies import SimpleCookie
from typing import Any

import aiohttp
import pytest

from core.settings import Settings
from extensions.sessions import SESSION_COOKIE
from tests.support.api_client import ApiClient, Reply
from tests.support.sql import execute

PASSWORD = "correct horse battery"
_people = itertools.count(1)


@dataclass
class Answer:
    status: int
    body: Any
    headers: Any

    @property
    def error_code(self) -> str | None:
        return Reply(self.status, self.body).error_code


class Browser:
    """A browser tab: sends the session cookie it was given, and X-CSRF-Token when told."""

    def __init__(self, http: aiohttp.ClientSession, base_url: str) -> None:
        self.http = http
        self.base_url = base_url
        self.cookie: str | None = None
        self.csrf_token: str | None = None

    async def request(
        self, method: str, path: str, json_body: Any = None, *, csrf: str | bool | None = True,
        headers: dict[str, str] | None = None,
    ) -> Answer:  # fmt: skip
        sent = dict(headers or {})
        if self.cookie is not None:
            sent["Cookie"] = f"{SESSION_COOKIE}={self.cookie}"
        if csrf is True and self.csrf_token is not None:
            sent["X-CSRF-Token"] = self.csrf_token
        elif isinstance(csrf, str):
            sent["X-CSRF-Token"] = csrf
        async with self.http.request(
            method, self.base_url + path, json=json_body, headers=sent
        ) as response:
            body = await response.json() if response.content_type == "application/json" else None
            return Answer(response.status, body, response.headers)

    async def sign_in(self, email: str, password: str = PASSWORD, **kw: Any) -> Answer:
        answer = await self.request(
            "POST", "/session", {"email": email, "password": password}, **kw
        )
        if answer.status == 200:
            self.cookie = session_cookie(answer)[SESSION_COOKIE].value
            self.csrf_token = answer.body["csrf_token"]
        return answer


def session_cookie(answer: Answer) -> SimpleCookie:
    cookie: SimpleCookie = SimpleCookie()
    for header in answer.headers.getall("Set-Cookie", []):
        cookie.load(header)
    return cookie


@pytest.fixture
def browser(http: aiohttp.ClientSession, api_base: str) -> Browser:
    return Browser(http, api_base)


@pytest.fixture
def new_browser(http: aiohttp.ClientSession, api_base: str) -> Any:
    return lambda: Browser(http, api_base)


async def person(
    admin: ApiClient, role: str = "operator", password: str = PASSWORD
) -> dict[str, Any]:
    """A user with a unique email and a sign-in password."""
    email = f"Person.{next(_people)}@Example.com"
    reply = await admin.post("/users", {"name": "Person", "email": email, "role": role})
    assert reply.status == 201, reply
    assert (
        await admin.put(f"/users/{reply.body['id']}/password", {"password": password})
    ).status == 204
    user: dict[str, Any] = reply.body
    return user


async def last_event_id(settings: Settings) -> int:
    rows = await execute(settings.database_url, "SELECT COALESCE(MAX(id), 0) FROM events")
    return int(rows[0][0])


async def events_after(settings: Settings, after: int) -> list[tuple[str, dict[str, Any]]]:
    """Events are written in the request's own transaction: they are there once it answers."""
    rows = await execute(
        settings.database_url, "SELECT type, data FROM events WHERE id > :after ORDER BY id",
        after=after,
    )  # fmt: skip
    return [(type_, json.loads(data) if isinstance(data, str) else data) for type_, data in rows]


async def test_admin_sets_a_password_and_the_person_signs_in_with_a_strict_cookie(
    admin: ApiClient, browser: Browser, settings: Settings
) -> None:
    before = await last_event_id(settings)
    user = await person(admin, role="supervisor")
    # Emails match whatever their case and blanks.
    answer = await browser.sign_in(f"  {user['email'].upper()} ")
    assert answer.status == 200, answer.body
    assert answer.body["user"]["id"] == user["id"]
    assert answer.body["role"] == "supervisor"
    assert answer.body["csrf_token"]
    cookie = session_cookie(answer)[SESSION_COOKIE]
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Strict"
    assert cookie["path"] == "/"
    assert not cookie["secure"]  # settings.sign_in.secure_cookie is off by default
    assert not cookie["max-age"]  # the browser forgets it when it closes

    me = await browser.request("GET", "/me")
    assert me.status == 200
    assert me.body["user"]["id"] == user["id"] and me.body["role"] == "supervisor"
    assert me.body["via"] == "session" and me.body["csrf_token"] == browser.csrf_token
    # A supervisor's session reads what a supervisor's token reads.
    assert (await browser.request("GET", "/users")).status == 200

    events = await events_after(settings, before)
    types = [type_ for type_, _ in events]
    assert "user_password_set" in types and "session_started" in types
    started = next(data for type_, data in events if type_ == "session_started")
    assert started["user_id"] == user["id"] and started["address"] == "127.0.0.1"
    # No password, hash or token in any event.
    assert all(browser.cookie not in json.dumps(data) for _, data in events)
    assert all(PASSWORD not in json.dumps(data) for _, data in events)
    rows = await execute(
        settings.database_url, "SELECT password_hash FROM users WHERE id = :id", id=user["id"]
    )
    assert rows[0][0].startswith("$argon2id$")


@pytest.mark.parametrize("password", ["", "short", "elevenchars"])
async def test_a_weak_password_is_422_weak_password(admin: ApiClient, password: str) -> None:
    user = await admin.new_user("Weak")
    reply = await admin.put(f"/users/{user['id']}/password", {"password": password})
    assert reply.status == 422
    assert reply.error_code == "weak_password" and reply.body["error"]["field"] == "password"


async def test_setting_a_password_needs_an_admin_and_an_active_user(admin: ApiClient) -> None:
    operator = await admin.new_user("Operator")
    as_operator = admin.as_token(await admin.token_for(operator["id"]))
    own = await as_operator.put(f"/users/{operator['id']}/password", {"password": PASSWORD})
    assert own.status == 403 and own.error_code == "forbidden"
    missing = await admin.put("/users/999999999/password", {"password": PASSWORD})
    assert missing.status == 404
    await admin.patch(f"/users/{operator['id']}", {"active": False})
    dismissed = await admin.put(f"/users/{operator['id']}/password", {"password": PASSWORD})
    assert dismissed.status == 409 and dismissed.error_code == "user_inactive"


async def test_unsafe_requests_with_the_cookie_need_the_csrf_token(
    admin: ApiClient, browser: Browser
) -> None:
    user = await person(admin, role="admin")
    assert (await browser.sign_in(user["email"])).status == 200
    for csrf in (None, "not-the-token", browser.cookie):
        refused = await browser.request("POST", "/users", {"name": "Forged"}, csrf=csrf)
        assert refused.status == 403 and refused.error_code == "csrf_failed"
    created = await browser.request("POST", "/users", {"name": "By the console"})
    assert created.status == 201
    # Reading needs no CSRF token.
    assert (await browser.request("GET", f"/users/{created.body['id']}", csrf=None)).status == 200


async def test_sign_out_ends_the_session_on_the_server(
    admin: ApiClient, browser: Browser, settings: Settings
) -> None:
    user = await person(admin)
    assert (await browser.sign_in(user["email"])).status == 200
    assert (await browser.request("DELETE", "/session", csrf=None)).error_code == "csrf_failed"
    before = await last_event_id(settings)
    out = await browser.request("DELETE", "/session")
    assert out.status == 204
    cleared = session_cookie(out)[SESSION_COOKIE]
    assert cleared.value == "" and cleared["max-age"] == "0"
    # The old cookie, kept by a careless browser, is worthless.
    after = await browser.request("GET", "/me")
    assert after.status == 401 and after.error_code == "unauthorized"
    (ended,) = await events_after(settings, before)
    assert ended[0] == "session_ended"
    assert ended[1]["user_id"] == user["id"] and ended[1]["reason"] == "signed_out"


async def test_wrong_password_and_unknown_email_answer_alike(
    admin: ApiClient, browser: Browser, settings: Settings
) -> None:
    user = await person(admin)
    before = await last_event_id(settings)
    wrong = await browser.sign_in(user["email"], "not the password at all")
    nobody = await browser.sign_in("nobody@example.com", PASSWORD)
    for answer in (wrong, nobody):
        assert answer.status == 401 and answer.error_code == "bad_credentials"
        assert SESSION_COOKIE not in session_cookie(answer)
    failed = [
        data for type_, data in await events_after(settings, before) if type_ == "sign_in_failed"
    ]
    assert [f["user_ids"] for f in failed] == [[user["id"]], []]
    assert failed[0]["email_failures"] == 1 and failed[0]["address"] == "127.0.0.1"


async def test_repeated_failures_lock_the_email_with_429_and_retry_after(
    admin: ApiClient, browser: Browser, settings: Settings
) -> None:
    limit = settings.sign_in.max_failures
    user = await person(admin)
    before = await last_event_id(settings)
    for _ in range(limit - 1):
        assert (await browser.sign_in(user["email"], "guess guess guess")).status == 401
    locking = await browser.sign_in(user["email"], "guess guess guess")
    assert locking.status == 429 and locking.error_code == "locked"
    assert locking.headers["Retry-After"] == str(settings.sign_in.lock_seconds)
    assert locking.body["error"]["retry_after"] == settings.sign_in.lock_seconds
    # Locked: even the right password is refused, and says for how long.
    right = await browser.sign_in(user["email"])
    assert right.status == 429 and right.error_code == "locked"
    assert 0 < int(right.headers["Retry-After"]) <= settings.sign_in.lock_seconds
    locked = [
        data for type_, data in await events_after(settings, before) if type_ == "user_locked"
    ]
    assert locked == [
        {"email": user["email"], "user_ids": [user["id"]], "seconds": settings.sign_in.lock_seconds}
    ]
    # Others behind the same address still sign in.
    other = await person(admin)
    assert (await browser.sign_in(other["email"])).status == 200
    metrics = await (
        await browser.http.get(browser.base_url.removesuffix("/api/v1") + "/metrics")
    ).text()
    assert 'pbx_sign_ins_total{outcome="locked"}' in metrics
    assert 'pbx_sign_in_locks_total{scope="email"}' in metrics


async def test_a_success_starts_the_failure_count_anew(
    admin: ApiClient, browser: Browser, settings: Settings
) -> None:
    user = await person(admin)
    for _ in range(2):
        for _ in range(settings.sign_in.max_failures - 1):
            assert (await browser.sign_in(user["email"], "almost almost")).status == 401
        assert (await browser.sign_in(user["email"])).status == 200


async def test_dismissal_ends_the_persons_sessions(
    admin: ApiClient, browser: Browser, settings: Settings
) -> None:
    user = await person(admin)
    assert (await browser.sign_in(user["email"])).status == 200
    before = await last_event_id(settings)
    assert (await admin.patch(f"/users/{user['id']}", {"active": False})).status == 200
    assert (await browser.request("GET", "/me")).status == 401
    ended = [
        data for type_, data in await events_after(settings, before) if type_ == "session_ended"
    ]
    assert [e["reason"] for e in ended] == ["user_dismissed"]
    again = Browser(browser.http, browser.base_url)
    assert (await again.sign_in(user["email"])).error_code == "bad_credentials"


async def test_an_open_event_stream_closes_when_its_session_ends_or_its_user_is_dismissed(
    admin: ApiClient, browser: Browser, new_browser: Any
) -> None:
    """Credentials checked only when the stream opened would let a signed-out or dismissed
    person go on reading events."""
    user = await person(admin)
    issued = await admin.post("/tokens", {"user_id": user["id"], "role": "operator"})
    token = issued.body["token"]
    host = browser.base_url.split("://")[1].split("/")[0]
    url = browser.base_url.replace("http://", "ws://") + "/events"
    origin = {"Origin": f"http://{host}"}

    async def closed_with(stream: aiohttp.ClientWebSocketResponse) -> tuple[int, str]:
        message = await asyncio.wait_for(stream.receive(), 10)
        assert message.type is aiohttp.WSMsgType.CLOSE, message
        return message.data, message.extra  # the close frame's code and reason

    assert (await browser.sign_in(user["email"])).status == 200
    cookie = {"Cookie": f"{SESSION_COOKIE}={browser.cookie}"}
    async with browser.http.ws_connect(url, headers=cookie | origin) as stream:
        assert (await browser.request("DELETE", "/session")).status == 204
        assert await closed_with(stream) == (1008, "session ended")

    later = new_browser()
    assert (await later.sign_in(user["email"])).status == 200
    cookie = {"Cookie": f"{SESSION_COOKIE}={later.cookie}"}
    bearer = {"Authorization": f"Bearer {token}"}
    async with (
        later.http.ws_connect(url, headers=cookie | origin) as by_session,
        browser.http.ws_connect(url, headers=bearer) as by_token,
    ):
        assert (await admin.patch(f"/users/{user['id']}", {"active": False})).status == 200
        # The session's end or the dismissal, whichever comes first: both void it.
        assert (await closed_with(by_session))[0] == 1008
        assert await closed_with(by_token) == (1008, "user dismissed")


async def test_changing_ones_password_ends_the_other_sessions(
    admin: ApiClient, new_browser: Any
) -> None:
    user = await person(admin)
    here, elsewhere = new_browser(), new_browser()
    assert (await here.sign_in(user["email"])).status == 200
    assert (await elsewhere.sign_in(user["email"])).status == 200
    new = "a brand new passphrase"
    wrong = await here.request(
        "PUT", "/me/password", {"current_password": "not it at all", "new_password": new}
    )
    assert wrong.status == 403 and wrong.error_code == "wrong_password"
    weak = await here.request(
        "PUT", "/me/password", {"current_password": PASSWORD, "new_password": "short"}
    )
    assert weak.status == 422 and weak.error_code == "weak_password"
    assert weak.body["error"]["field"] == "new_password"
    changed = await here.request(
        "PUT", "/me/password", {"current_password": PASSWORD, "new_password": new}
    )
    assert changed.status == 204
    assert (await here.request("GET", "/me")).status == 200
    assert (await elsewhere.request("GET", "/me")).status == 401
    assert (await new_browser().sign_in(user["email"])).error_code == "bad_credentials"
    assert (await new_browser().sign_in(user["email"], new)).status == 200


async def test_guessing_the_current_password_counts_toward_the_sign_in_lockout(
    admin: ApiClient, new_browser: Any, settings: Settings
) -> None:
    """A stolen session must not be a way to guess the password without limit: wrong
    current passwords count as failed sign-ins of the person's email."""
    limit = settings.sign_in.max_failures
    user = await person(admin)
    here = new_browser()
    assert (await here.sign_in(user["email"])).status == 200
    before = await last_event_id(settings)
    guess = {"current_password": "guess guess guess", "new_password": "a brand new passphrase"}
    for _ in range(limit - 1):
        wrong = await here.request("PUT", "/me/password", guess)
        assert wrong.status == 403 and wrong.error_code == "wrong_password"
    locking = await here.request("PUT", "/me/password", guess)
    assert locking.status == 429 and locking.error_code == "locked"
    assert locking.headers["Retry-After"] == str(settings.sign_in.lock_seconds)
    right = {"current_password": PASSWORD, "new_password": "a brand new passphrase"}
    assert (await here.request("PUT", "/me/password", right)).error_code == "locked"
    assert (await new_browser().sign_in(user["email"])).error_code == "locked"
    failed = [d for t, d in await events_after(settings, before) if t == "sign_in_failed"]
    assert {f["attempt"] for f in failed} == {"password_change"}
    assert [f["email_failures"] for f in failed] == list(range(1, limit + 1))
    assert "user_locked" in {t for t, _ in await events_after(settings, before)}


async def test_an_admin_setting_the_password_ends_every_session(
    admin: ApiClient, browser: Browser
) -> None:
    user = await person(admin)
    assert (await browser.sign_in(user["email"])).status == 200
    assert (
        await admin.put(f"/users/{user['id']}/password", {"password": "reset by the admin"})
    ).status == 204
    assert (await browser.request("GET", "/me")).status == 401


async def test_an_idle_session_has_ended(
    admin: ApiClient, browser: Browser, settings: Settings
) -> None:
    user = await person(admin)
    assert (await browser.sign_in(user["email"])).status == 200
    assert (await browser.request("GET", "/me")).status == 200
    idle = settings.sign_in.session_idle_seconds
    # As if the session had last been used longer ago than the idle limit.
    rows = await execute(
        settings.database_url,
        "SELECT id, last_seen_at FROM person_sessions WHERE user_id = :id",
        id=user["id"],
    )
    ((session_id, _),) = rows
    await execute(
        settings.database_url,
        "UPDATE person_sessions SET last_seen_at = :at WHERE id = :id",
        at=datetime.now(UTC) - timedelta(seconds=idle + 1),
        id=session_id,
    )
    assert (await browser.request("GET", "/me")).status == 401


async def test_bearer_tokens_keep_working_beside_sessions(
    admin: ApiClient, browser: Browser
) -> None:
    user = await person(admin)
    as_user = admin.as_token(await admin.token_for(user["id"]))
    me = await as_user.get("/me")
    assert me.status == 200
    assert me.body == {**me.body, "via": "token", "role": "operator", "csrf_token": None}
    assert me.body["user"]["id"] == user["id"]
    # A token needs no CSRF token, and is not a session to sign out of.
    change = {"current_password": PASSWORD, "new_password": "changed by a script"}
    assert (await as_user.put("/me/password", change)).status == 204
    assert (await as_user.delete("/session")).error_code == "not_a_session"
    operator = await admin.get("/me")
    assert operator.body["user"] is None and operator.body["role"] == "admin"
    assert (
        await admin.put("/me/password", {"current_password": "x", "new_password": "y"})
    ).error_code == "not_a_user"
    assert (await ApiClient(admin.session, admin.base_url, None).get("/me")).status == 401


async def test_sign_in_from_another_sites_page_is_refused(
    admin: ApiClient, browser: Browser
) -> None:
    user = await person(admin)
    forged = await browser.sign_in(user["email"], headers={"Origin": "https://evil.example"})
    assert forged.status == 403 and forged.error_code == "cross_origin"
    host = browser.base_url.split("://")[1].split("/")[0]
    own = await browser.sign_in(user["email"], headers={"Origin": f"http://{host}"})
    assert own.status == 200


async def test_the_event_stream_opens_with_the_cookie_only_from_the_consoles_origin(
    admin: ApiClient, browser: Browser
) -> None:
    user = await person(admin)
    assert (await browser.sign_in(user["email"])).status == 200
    host = browser.base_url.split("://")[1].split("/")[0]
    url = browser.base_url.replace("http://", "ws://") + "/events"
    cookie = {"Cookie": f"{SESSION_COOKIE}={browser.cookie}"}
    # Another page on this host (another port) must not read the person's events.
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await browser.http.ws_connect(url, headers=cookie | {"Origin": "http://127.0.0.1:1"})
    assert refused.value.status == 403
    async with browser.http.ws_connect(url, headers=cookie | {"Origin": f"http://{host}"}):
        pass
