"""`pbx run` as a user runs it: everything starts, phones register, Ctrl-C stops it all."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.support.ports import free_port

PBX = Path(sys.executable).parent / "pbx"


def write_config(folder: Path) -> dict[str, int]:
    ports = {"api": free_port(), "sip": free_port(), "rpc": free_port(), "redis": free_port()}
    (folder / "config.toml").write_text(
        f"""
[data]
dir = "state"
[redis]
port = {ports["redis"]}
[sip]
port = {ports["sip"]}
rpc_port = {ports["rpc"]}
[api]
port = {ports["api"]}
[log]
level = "warning"
"""
    )
    return ports


class RunningService:
    def __init__(self, process: asyncio.subprocess.Process, banner: str) -> None:
        self.process = process
        self.banner = banner

    @property
    def admin_token(self) -> str:
        match = re.search(r"Admin token\s+(\S+)", self.banner)
        assert match, self.banner
        return match.group(1)

    async def interrupt(self) -> int:
        self.process.send_signal(signal.SIGINT)
        return await asyncio.wait_for(self.process.wait(), timeout=20)


async def start_service(folder: Path, *, new_session: bool = False) -> RunningService:
    """`new_session`: in a process group of its own, to kill it with all its children."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PBX_")}
    env["PBX_CONFIG"] = str(folder / "config.toml")
    process = await asyncio.create_subprocess_exec(
        str(PBX),
        "run",
        cwd=folder,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=new_session,
    )
    assert process.stdout is not None
    output: list[str] = []
    async with asyncio.timeout(60):
        while not any("Press Ctrl-C" in line for line in output):
            line = (await process.stdout.readline()).decode()
            if not line:
                pytest.fail("pbx run exited early:\n" + "".join(output))
            output.append(line)
    # Keep draining so the child never blocks on a full pipe.
    asyncio.get_running_loop().create_task(process.stdout.read())
    return RunningService(process, "".join(output))


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def test_run_starts_everything_and_ctrl_c_stops_it(tmp_path: Path) -> None:
    from tests.support.phone import TestPhone

    folder = tmp_path
    ports = write_config(folder)
    service = await start_service(folder)
    try:
        assert f"sip:127.0.0.1:{ports['sip']}" in service.banner
        assert f"http://127.0.0.1:{ports['api']}/api/v1" in service.banner
        token = service.admin_token
        base = f"http://127.0.0.1:{ports['api']}/api/v1"
        headers = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession(headers=headers) as http:
            async with http.get(base + "/health") as reply:
                assert (await reply.json())["status"] == "ok"
            async with http.post(base + "/users", json={"name": "First Agent"}) as reply:
                assert reply.status == 201
                user = await reply.json()
            async with http.put(
                f"{base}/users/{user['id']}/extension", json={"extension": "1001"}
            ) as reply:
                sip = (await reply.json())["sip"]
            on_lunch = {"status": "not_ready", "reason": "lunch", "message": "back at 2"}
            async with http.put(f"{base}/users/{user['id']}/presence", json=on_lunch) as reply:
                assert reply.status == 200
        phone = TestPhone()
        try:
            status = await phone.register(
                sip["username"], sip["password"], sip["domain"], "127.0.0.1", ports["sip"]
            )
        finally:
            phone.close()
        assert status == 200
    finally:
        code = await service.interrupt()
    assert code == 0
    assert all(port_is_free(p) for p in ports.values())
    assert (folder / "state" / "pbx.sqlite3").exists()

    # Running it again is harmless: same database, same admin token, nothing re-created.
    again = await start_service(folder)
    try:
        assert again.admin_token == token
        users_url = f"http://127.0.0.1:{ports['api']}/api/v1/users"
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
            async with http.get(users_url) as reply:
                names = [u["name"] for u in (await reply.json())["items"]]
            # The agent's presence outlived the restart (Redis keeps it on disk).
            async with http.get(f"{users_url}/{user['id']}/presence") as reply:
                presence = await reply.json()
        assert names.count("First Agent") == 1 and names.count("Administrator") == 1
        assert (presence["status"], presence["reason"], presence["message"]) == (
            "not_ready", "lunch", "back at 2")  # fmt: skip
    finally:
        assert await again.interrupt() == 0
