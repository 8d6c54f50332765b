"""`pbx cluster` (`make cluster`) as an operator runs it: PostgreSQL, Redis, two nodes and two
media hosts on loopback addresses of their own, described in roles.json; a call through an
edge (the standby's too) runs on a media host; kill -9 of the active controller and the
other node takes over, links the media hosts and takes calls; Ctrl-C stops everything and
removes roles.json."""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from api.cli_cluster import postgres_folder
from tests.support.ports import free_port, free_port_block
from tests.support.sipp import call_number

PBX = Path(sys.executable).parent / "pbx"
TAKEOVER_BOUND_S = 30.0  # generous for a loaded machine; the time is printed
WORKERS_PER_HOST = 2
NUMBER = "4930999200"
QUEUE_NUMBER = "4930999300"


async def health(http: aiohttp.ClientSession, api: str) -> dict[str, Any]:
    async with http.get(api + "/api/v1/health") as reply:
        body: dict[str, Any] = await reply.json()
    return body


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def link_port(cluster: Path, address: str) -> int:
    """The media host's link port, as `pbx cluster` wrote it in the host's config."""
    for config in cluster.glob("media-*/config.toml"):
        text = config.read_text()
        if f'host = "{address}"' in text:
            return int(text.split("[media]")[1].split("port = ")[1].split()[0])
    raise AssertionError(f"no media host config for {address}")


async def until_a_call_succeeds(folder: Path, edge: str) -> None:
    """The edge takes calls once it lists the workers (Kamailio reloads its list at most
    every 5 s after it starts)."""
    async with asyncio.timeout(60):
        host, port = edge.rsplit(":", 1)
        while not (
            await call_number(folder, int(port), NUMBER, stay_s=0.5, edge_host=host)
        ).succeeded:
            await asyncio.sleep(0.2)


async def queue_line(http: aiohttp.ClientSession, api: str) -> int:
    """A queue nobody answers and QUEUE_NUMBER straight into it: the queue's id."""
    queue = {"name": "Waiting", "when_no_agents": "wait", "announce_interval": 0}
    async with http.post(api + "/api/v1/queues", json=queue) as reply:
        assert reply.status == 201, await reply.text()
        queue_id: int = (await reply.json())["id"]
    line = {"number": QUEUE_NUMBER, "greeting": {"text": "Hello."}, "extension_dialing": False,
            "default_destination": {"type": "queue", "id": queue_id}}  # fmt: skip
    async with http.post(api + "/api/v1/numbers", json=line) as reply:
        assert reply.status == 201, await reply.text()
    return queue_id


async def until_waiting(http: aiohttp.ClientSession, api: str, queue_id: int) -> dict[str, Any]:
    """The one caller in the queue, once there."""
    async with asyncio.timeout(30):
        while True:
            async with http.get(f"{api}/api/v1/queues/{queue_id}/waiting") as reply:
                items = (await reply.json())["items"]
            if items:
                found: dict[str, Any] = items[0]
                return found
            await asyncio.sleep(0.1)


async def test_make_cluster_runs_two_nodes_and_the_standby_takes_over(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('[data]\ndir = "data"\n[log]\nlevel = "warning"\n')
    # Addresses of its own, not the defaults a developer's `make cluster` may be using.
    first = f"127.0.{random.randint(1, 250)}.{random.randint(10, 200)}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PBX_")}
    process = await asyncio.create_subprocess_exec(
        str(PBX), "cluster", "--config", str(tmp_path / "config.toml"), "--first-address", first,
        "--api-port", str(free_port()), "--sip-port", str(free_port()),
        "--base-port", str(free_port_block(200)), "--workers-per-host", str(WORKERS_PER_HOST),
        cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert process.stdout is not None
    output: list[str] = []
    cluster = (tmp_path / "data" / "cluster").resolve()
    roles_file = cluster / "roles.json"
    try:
        async with asyncio.timeout(120):
            while not any("Press Ctrl-C" in line for line in output):
                line = (await process.stdout.readline()).decode()
                if not line:
                    pytest.fail("pbx cluster exited early:\n" + "".join(output))
                output.append(line)
        asyncio.get_running_loop().create_task(process.stdout.read())  # keep the pipe drained
        roles = json.loads(roles_file.read_text())
        assert sorted(p["role"] for p in roles["processes"]) == [
            "controller", "controller", "edge", "edge", "media", "media", "postgresql", "redis",
        ]  # fmt: skip
        assert roles["trunk_sources"] == ["127.0.0.1"] and len(roles["edges"]) == 2
        controllers = {p["address"]: p["pid"] for p in roles["processes"]
                       if p["role"] == "controller"}  # fmt: skip
        token = (cluster / "admin-token").read_text().strip()
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
            states = [(await health(http, api))["controller"] for api in roles["apis"]]
            assert sorted(s["role"] for s in states) == ["active", "standby"]
            active = next(s["node"] for s in states if s["role"] == "active")
            active_api = roles["apis"][0 if active == "a" else 1]
            other_api = roles["apis"][1 if active == "a" else 0]
            address = active_api.removeprefix("http://").rsplit(":", 1)[0]
            edges = {edge.rsplit(":", 1)[0]: edge for edge in roles["edges"]}
            media = [p["address"] for p in roles["processes"] if p["role"] == "media"]
            assert set((await health(http, active_api))["checks"]["media_hosts"]) == {
                f"{host}:{port}" for host in media for port in [link_port(cluster, host)]
            }
            line = {"number": NUMBER, "greeting": {"text": "Welcome."},
                    "default_destination": {"type": "hangup"}}  # fmt: skip
            async with http.post(other_api + "/api/v1/numbers", json=line) as reply:
                assert reply.status == 201, await reply.text()  # the standby passes it on
            await until_a_call_succeeds(tmp_path, edges[address])
            # The standby's edge takes calls too, for the active node's workers.
            other_address = other_api.removeprefix("http://").rsplit(":", 1)[0]
            await until_a_call_succeeds(tmp_path, edges[other_address])
            # A caller waiting in a queue (nobody to answer) through the standby's edge.
            queue_id = await queue_line(http, other_api)
            host, port = edges[other_address].rsplit(":", 1)
            waiting = asyncio.create_task(call_number(
                tmp_path, int(port), QUEUE_NUMBER, edge_host=host, hang_up="remote",
                tone_hz=440, timeout_s=120,
            ))  # fmt: skip
            place = await until_waiting(http, active_api, queue_id)

            os.kill(controllers[address], signal.SIGKILL)
            killed_at = time.monotonic()
            async with asyncio.timeout(TAKEOVER_BOUND_S):
                while True:
                    found = await health(http, other_api)
                    if (found["controller"]["role"], found["checks"]["media_workers"]) == (
                        "active", "ok",
                    ):  # fmt: skip
                        break
                    await asyncio.sleep(0.05)
            print(f"the standby runs calls {time.monotonic() - killed_at:.2f} s after kill -9 "
                  "of the active controller")  # fmt: skip
            assert set((await health(http, other_api))["checks"]["media_hosts"].values()) == {"ok"}
            await until_a_call_succeeds(tmp_path, edges[other_address])
            # The waiting caller is in line on the new active node, with the same call.
            assert (await until_waiting(http, other_api, queue_id))["call_id"] == place["call_id"]
            assert not waiting.done()
            waiting.cancel()
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
            assert await asyncio.wait_for(process.wait(), 60) == 0
        # As root, PostgreSQL's folder may be apart from the cluster's (see postgres_folder).
        if postgres_folder(cluster).parent != cluster:
            shutil.rmtree(postgres_folder(cluster), ignore_errors=True)
    assert not roles_file.exists()
    assert not any(alive(p["pid"]) for p in roles["processes"])
