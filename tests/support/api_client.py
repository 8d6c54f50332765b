"""A thin JSON client for the REST API, as an admin script would use it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp


@dataclass
class Reply:
    status: int
    body: Any

    @property
    def error_code(self) -> str | None:
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            code: str = self.body["error"]["code"]
            return code
        return None


class ApiClient:
    def __init__(self, session: aiohttp.ClientSession, base_url: str, token: str | None) -> None:
        self.session = session
        self.base_url = base_url
        self.token = token

    def as_token(self, token: str | None) -> ApiClient:
        return ApiClient(self.session, self.base_url, token)

    async def request(
        self,
        method: str,
        path: str,
        json: Any = None,
        *,
        data: str | bytes | None = None,
        params: dict[str, str] | None = None,
    ) -> Reply:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        if data is not None:
            headers["Content-Type"] = "application/json"
        async with self.session.request(
            method, self.base_url + path, json=json, data=data, params=params, headers=headers
        ) as response:
            text = await response.text()
            body: Any = None
            if text and response.content_type == "application/json":
                body = await response.json()
            return Reply(response.status, body if body is not None else text)

    async def get(self, path: str, **kw: Any) -> Reply:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, json: Any = None, **kw: Any) -> Reply:
        return await self.request("POST", path, json, **kw)

    async def put(self, path: str, json: Any = None, **kw: Any) -> Reply:
        return await self.request("PUT", path, json, **kw)

    async def patch(self, path: str, json: Any = None, **kw: Any) -> Reply:
        return await self.request("PATCH", path, json, **kw)

    async def delete(self, path: str, **kw: Any) -> Reply:
        return await self.request("DELETE", path, **kw)

    # Shortcuts used by many tests.
    async def new_user(self, name: str = "Agent", role: str = "operator") -> dict[str, Any]:
        reply = await self.post("/users", {"name": name, "role": role})
        assert reply.status == 201, reply
        user: dict[str, Any] = reply.body
        return user

    async def assign(self, user_id: int, extension: str) -> dict[str, Any]:
        reply = await self.put(f"/users/{user_id}/extension", {"extension": extension})
        assert reply.status == 200, reply
        assignment: dict[str, Any] = reply.body
        return assignment

    async def token_for(self, user_id: int, role: str | None = None) -> str:
        body: dict[str, Any] = {"user_id": user_id}
        if role:
            body["role"] = role
        reply = await self.post("/tokens", body)
        assert reply.status == 201, reply
        token: str = reply.body["token"]
        return token
