"""The REST contract: auth and roles, validation errors, not-found, and the OpenAPI document."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from sqlalchemy import text

from core.db import WRITER_LOCK_KEY, create_engine
from core.settings import Settings
from tests.support.api_client import ApiClient


async def test_health_and_openapi_need_no_token(anonymous: ApiClient) -> None:
    health = await anonymous.get("/health")
    assert health.status == 200
    assert health.body["status"] == "ok"
    assert health.body["checks"] == {
        "database": "ok", "redis": "ok", "edge": "ok", "media_workers": "ok", "media_hosts": {},
    }  # fmt: skip
    assert health.body["trunk_registration"] == "off"
    spec = await anonymous.get("/openapi.json")
    assert spec.status == 200
    assert spec.body["openapi"].startswith("3.")


async def test_openapi_documents_every_route_with_resolvable_schemas(anonymous: ApiClient) -> None:
    spec: dict[str, Any] = (await anonymous.get("/openapi.json")).body
    paths = spec["paths"]
    expected = {
        ("/api/v1/health", "get"),
        ("/api/v1/users", "post"),
        ("/api/v1/users", "get"),
        ("/api/v1/users/{user_id}", "get"),
        ("/api/v1/users/{user_id}", "patch"),
        ("/api/v1/users/{user_id}/extension", "put"),
        ("/api/v1/users/{user_id}/extension", "delete"),
        ("/api/v1/users/{user_id}/sip-password", "post"),
        ("/api/v1/extensions", "get"),
        ("/api/v1/tokens", "post"),
        ("/api/v1/events", "get"),
    }
    assert expected <= {(p, m) for p, ops in paths.items() for m in ops}
    schemas = spec["components"]["schemas"]

    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            found = [node["$ref"]] if "$ref" in node else []
            return found + [r for v in node.values() for r in refs(v)]
        if isinstance(node, list):
            return [r for v in node for r in refs(v)]
        return []

    for ref in refs(spec):
        assert ref.startswith("#/components/schemas/")
        assert ref.rsplit("/", 1)[1] in schemas, ref
    create = paths["/api/v1/users"]["post"]
    assert "422" in create["responses"] and "201" in create["responses"]


@pytest.mark.parametrize(("headers_token", "status"), [(None, 401), ("nope", 401), ("Bearer", 401)])
async def test_missing_or_unknown_token_is_401(
    anonymous: ApiClient, headers_token: str | None, status: int
) -> None:
    reply = await anonymous.as_token(headers_token).get("/users")
    assert reply.status == status
    assert reply.error_code == "unauthorized"


async def test_operator_cannot_administer_but_may_read_self(admin: ApiClient) -> None:
    me = await admin.new_user("Olga Operator")
    other = await admin.new_user("Someone Else")
    operator = admin.as_token(await admin.token_for(me["id"]))
    assert (await operator.post("/users", {"name": "X"})).status == 403
    assert (await operator.get("/users")).status == 403
    assert (await operator.get(f"/users/{other['id']}")).status == 403
    assert (await operator.patch(f"/users/{me['id']}", {"role": "admin"})).status == 403
    assert (await operator.post("/tokens", {"user_id": me["id"]})).error_code == "forbidden"
    own = await operator.get(f"/users/{me['id']}")
    assert own.status == 200 and own.body["name"] == "Olga Operator"
    assert (await operator.get("/extensions")).status == 200


async def test_supervisor_reads_but_does_not_write(admin: ApiClient) -> None:
    boss = await admin.new_user("Sue Supervisor", role="supervisor")
    supervisor = admin.as_token(await admin.token_for(boss["id"]))
    assert (await supervisor.get("/users")).status == 200
    assert (await supervisor.post("/users", {"name": "X"})).status == 403
    target = await admin.new_user("Target")
    assert (
        await supervisor.put(f"/users/{target['id']}/extension", {"extension": "1"})
    ).status == 403


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"name": "A", "email": "not-an-email"}, "email"),
        ({"name": "A", "role": "root"}, "role"),
        ({"name": "A", "colour": "red"}, "colour"),
        ({"name": 5}, "name"),
        ({"name": "A", "wrap_up_time": -1}, "wrap_up_time"),
        ({"name": "A", "wrap_up_time": 3601}, "wrap_up_time"),
        ({"name": "A", "wrap_up_time": "soon"}, "wrap_up_time"),
    ],
)
async def test_invalid_user_is_422_naming_the_field(
    admin: ApiClient, body: dict[str, Any], field: str
) -> None:
    reply = await admin.post("/users", body)
    assert reply.status == 422, reply
    assert reply.body["error"]["code"] == "validation_error"
    assert reply.body["error"]["field"] == field
    assert reply.body["error"]["message"]


@pytest.mark.parametrize("raw", ["{", "[1, 2]", '"text"', "null", ""])
async def test_body_that_is_not_a_json_object_is_422(admin: ApiClient, raw: str) -> None:
    reply = await admin.post("/users", data=raw)
    assert reply.status == 422
    assert reply.error_code == "invalid_body"


async def test_unknown_ids_and_routes_are_404(admin: ApiClient) -> None:
    assert (await admin.get("/users/999999")).error_code == "not_found"
    assert (await admin.patch("/users/999999", {"name": "x"})).status == 404
    assert (await admin.put("/users/999999/extension", {"extension": "5"})).status == 404
    assert (await admin.post("/users/999999/sip-password")).status == 404
    assert (await admin.post("/tokens", {"user_id": 999999})).status == 404
    assert (await admin.get("/users/abc")).status == 404
    assert (await admin.get("/nothing-here")).error_code == "not_found"
    assert (await admin.request("DELETE", "/users")).error_code == "method_not_allowed"


async def test_list_users_paginates_and_filters(admin: ApiClient) -> None:
    created = [await admin.new_user(f"Page {i}") for i in range(3)]
    await admin.patch(f"/users/{created[0]['id']}", {"active": False})
    page = await admin.get("/users", params={"limit": "2", "offset": "0"})
    assert page.status == 200 and len(page.body["items"]) == 2 and page.body["total"] >= 3
    inactive = await admin.get("/users", params={"active": "false", "limit": "500"})
    assert created[0]["id"] in {u["id"] for u in inactive.body["items"]}
    assert all(not u["active"] for u in inactive.body["items"])
    bad = await admin.get("/users", params={"limit": "0"})
    assert bad.status == 422 and bad.body["error"]["field"] == "limit"


async def test_an_email_names_one_active_user(admin: ApiClient) -> None:
    first = (await admin.post("/users", {"name": "Una", "email": "una@example.com"})).body
    taken = await admin.post("/users", {"name": "Una Two", "email": "UNA@example.com"})
    assert taken.status == 409 and taken.error_code == "email_taken"
    assert taken.body["error"]["field"] == "email"
    other = (await admin.post("/users", {"name": "Una Three"})).body
    moved = await admin.patch(f"/users/{other['id']}", {"email": "una@example.com"})
    assert moved.status == 409 and moved.error_code == "email_taken"
    # A dismissed user's email is free again; taking the user back then is refused.
    assert (await admin.patch(f"/users/{first['id']}", {"active": False})).status == 200
    again = await admin.post("/users", {"name": "Una Again", "email": "una@example.com"})
    assert again.status == 201, again
    back = await admin.patch(f"/users/{first['id']}", {"active": True})
    assert back.status == 409 and back.error_code == "email_taken"


async def test_patch_changes_only_what_is_sent(admin: ApiClient) -> None:
    user = (await admin.post("/users", {"name": "Paula", "email": "paula@example.com"})).body
    renamed = await admin.patch(f"/users/{user['id']}", {"name": "Paula P."})
    assert renamed.body["name"] == "Paula P." and renamed.body["email"] == "paula@example.com"
    cleared = await admin.patch(f"/users/{user['id']}", {"email": None})
    assert cleared.body["email"] is None and cleared.body["name"] == "Paula P."
    promoted = await admin.patch(f"/users/{user['id']}", {"role": "supervisor"})
    assert promoted.body["role"] == "supervisor"
    assert promoted.body["wrap_up_time"] is None  # the queue's
    own = await admin.patch(f"/users/{user['id']}", {"wrap_up_time": 45})
    assert own.body["wrap_up_time"] == 45 and own.body["role"] == "supervisor"
    back = await admin.patch(f"/users/{user['id']}", {"wrap_up_time": None})
    assert back.body["wrap_up_time"] is None


async def test_tokens_default_to_the_users_role_and_die_with_the_user(admin: ApiClient) -> None:
    user = await admin.new_user("Tom", role="supervisor")
    issued = await admin.post("/tokens", {"user_id": user["id"], "label": "wallboard"})
    assert issued.status == 201
    assert issued.body["role"] == "supervisor" and issued.body["label"] == "wallboard"
    token_client = admin.as_token(issued.body["token"])
    assert (await token_client.get("/users")).status == 200
    await admin.patch(f"/users/{user['id']}", {"active": False})
    assert (await token_client.get("/users")).status == 401
    refused = await admin.post("/tokens", {"user_id": user["id"]})
    assert refused.status == 409
    assert (await admin.post("/tokens", {"user_id": user["id"], "role": "god"})).status == 422


async def test_metrics_expose_request_and_extension_figures(
    admin: ApiClient, http: Any, api_base: str
) -> None:
    await admin.get("/users")
    root = api_base.removesuffix("/api/v1")
    async with http.get(root + "/metrics") as response:
        text = await response.text()
    assert response.status == 200
    assert 'pbx_http_requests_total{method="GET",route="/api/v1/users",status="200"}' in text
    assert 'pbx_extensions_assigned{holder="user"}' in text
    assert "pbx_events_total" in text
    # Read from the edge at each scrape: its guard's drops since it started.
    assert 'pbx_edge_dropped_requests_total{reason="phone_flood"}' in text


@asynccontextmanager
async def writer_lock_held(settings: Settings) -> AsyncIterator[None]:
    """Another writer holds the database's one write lock: SQLite's, or on PostgreSQL the
    advisory lock every write transaction of the service takes first."""
    if settings.database_url.startswith("sqlite"):
        holder = sqlite3.connect(
            settings.data_dir / "pbx.sqlite3", isolation_level=None, timeout=30,
            check_same_thread=False,
        )  # fmt: skip
        try:
            # In a thread: the service shares this event loop, and a round it has begun must
            # be able to finish while we wait for the lock.
            await asyncio.to_thread(holder.execute, "BEGIN IMMEDIATE")
            yield
        finally:
            if holder.in_transaction:
                holder.execute("ROLLBACK")
            holder.close()
        return
    engine = create_engine(settings.database_url)
    try:
        async with engine.connect() as holder:
            await holder.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": WRITER_LOCK_KEY}
            )
            yield
            await holder.rollback()
    finally:
        await engine.dispose()


async def test_a_database_held_by_another_writer_answers_503_not_500(
    admin: ApiClient, settings: Settings
) -> None:
    """One writer at a time: one that keeps the lock past the lock timeout makes a request 503."""
    async with writer_lock_held(settings):
        reply = await admin.post("/users", {"name": "Blocked Writer"})
    assert reply.status == 503 and reply.error_code == "busy"
    users = (await admin.get("/users", params={"limit": "500"})).body["items"]
    assert "Blocked Writer" not in [u["name"] for u in users]
    assert (await admin.post("/users", {"name": "Blocked Writer"})).status == 201
