"""Media hosts (`pbx media`): a `pbx run` node whose workers all run on two media hosts, each
on a loopback address of its own, linked over the network with the cluster's secret. Calls
spread over both; kill -9 of one host ends its calls only (the edge sends their BYEs), the
other host's call goes on, new calls go to the survivor, and the host rejoins when it is back.
A connection without the secret is refused."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from core.redis_server import ManagedRedis
from pbx.media_wire import PROOF_TIMEOUT_S, Refused, split_line
from tests.e2e.test_run_command import PBX, RunningService, start_service
from tests.support.phone import TestCall, TestPhone, tone_file
from tests.support.ports import free_port, free_port_block
from tests.support.sipp import SippResult, call_number

SECRET = "media-hosts-secret-0123"
NUMBER = "4930999100"
HOSTS = ("127.0.0.4", "127.0.0.5")
# Generous for a loaded machine: starting workers, linking a host again after its restart.
READY_S = 60.0
# A caller stays in the greeting's wait this long: long enough to kill a host meanwhile.
WAIT_AFTER_GREETING_S = 20


@dataclass(frozen=True)
class Layout:
    sip_port: int
    api: str
    first_sip_port: int
    first_rtp_port: int
    link_ports: tuple[int, int]


def write_configs(folder: Path) -> Layout:
    sip, api = free_port(), free_port()
    layout = Layout(
        sip, f"http://127.0.0.1:{api}/api/v1", free_port_block(2), free_port_block(80),
        (free_port(), free_port()),
    )  # fmt: skip
    media_hosts = ", ".join(f'"{h}:{p}"' for h, p in zip(HOSTS, layout.link_ports, strict=True))
    (folder / "node").mkdir()
    (folder / "node" / "config.toml").write_text(f"""
[data]
dir = "state"
[sip]
port = {sip}
rpc_port = {free_port()}
[api]
port = {api}
[workers]
max_workers = 2
spare_legs = 8
first_sip_port = {layout.first_sip_port}
first_rtp_port = {layout.first_rtp_port}
[calls]
wait_after_greeting = {WAIT_AFTER_GREETING_S}
[cluster]
secret = "{SECRET}"
media_hosts = [{media_hosts}]
""")  # fmt: skip
    for index, host in enumerate(HOSTS):
        (folder / f"media-{index}").mkdir()
        (folder / f"media-{index}" / "config.toml").write_text(f"""
[workers]
host = "{host}"
max_workers = 1
first_sip_port = {layout.first_sip_port}
first_rtp_port = {layout.first_rtp_port}
[media]
name = "m{index}"
port = {layout.link_ports[index]}
metrics_port = {free_port()}
[cluster]
secret = "{SECRET}"
""")  # fmt: skip
    return layout


async def start_media_host(folder: Path) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PBX_")}
    env["PBX_CONFIG"] = str(folder / "config.toml")
    log = (folder / "media.log").open("ab")
    return await asyncio.create_subprocess_exec(
        str(PBX), "media", cwd=folder, env=env, stdout=log, stderr=log, start_new_session=True,
    )  # fmt: skip


async def health(http: aiohttp.ClientSession, api: str) -> dict[str, Any]:
    async with http.get(api + "/health") as reply:
        body: dict[str, Any] = await reply.json()
    return body


async def until_hosts(
    http: aiohttp.ClientSession, api: str, wanted: dict[str, str]
) -> dict[str, Any]:
    async with asyncio.timeout(READY_S):
        while True:
            body = await health(http, api)
            hosts = {address.partition(":")[0]: check
                     for address, check in body["checks"]["media_hosts"].items()}  # fmt: skip
            if hosts == wanted and body["checks"]["media_workers"] == "ok":
                return body
            await asyncio.sleep(0.1)


async def until_the_edge_takes_calls(folder: Path, sip_port: int) -> None:
    """The edge lists the workers once the first has measured its leg cap, and Kamailio
    reloads its list at most every 5 s: until then it answers callers 503."""
    async with asyncio.timeout(READY_S):
        while not (await call_number(folder, sip_port, NUMBER, stay_s=0.2)).succeeded:
            await asyncio.sleep(0.2)


async def open_calls(http: aiohttp.ClientSession, api: str) -> list[dict[str, Any]]:
    async with http.get(api + "/calls", params={"direction": "inbound"}) as reply:
        items: list[dict[str, Any]] = (await reply.json())["items"]
    return [item for item in items if item["disposition"] is None]


async def test_a_lost_media_host_ends_its_calls_only_and_rejoins(tmp_path: Path) -> None:
    layout = write_configs(tmp_path)
    node: RunningService | None = None
    hosts: list[asyncio.subprocess.Process] = []
    calls: list[asyncio.Task[SippResult]] = []
    try:
        node = await start_service(tmp_path / "node")
        for index in range(len(HOSTS)):
            hosts.append(await start_media_host(tmp_path / f"media-{index}"))
        auth = {"Authorization": f"Bearer {node.admin_token}"}
        async with aiohttp.ClientSession(headers=auth) as http:
            await until_hosts(http, layout.api, dict.fromkeys(HOSTS, "ok"))
            line = {"number": NUMBER, "greeting": {"text": "Welcome."},
                    "default_destination": {"type": "hangup"}}  # fmt: skip
            async with http.post(layout.api + "/numbers", json=line) as reply:
                assert reply.status == 201, await reply.text()

            await until_the_edge_takes_calls(tmp_path, layout.sip_port)
            # One worker a host (max_workers = 1 there); the edge sends each call to the
            # worker with fewer calls: one call a host.
            for _ in range(2):
                calls.append(asyncio.create_task(call_number(
                    tmp_path, layout.sip_port, NUMBER, hang_up="remote", timeout_s=90,
                )))  # fmt: skip
                async with asyncio.timeout(15):
                    while len(await open_calls(http, layout.api)) < len(calls):
                        await asyncio.sleep(0.1)

            os.killpg(hosts[0].pid, signal.SIGKILL)
            await hosts[0].wait()
            await until_hosts(http, layout.api, {HOSTS[0]: "failing", HOSTS[1]: "ok"})
            # The lost host's caller hears the edge's BYE at once; the other waits on.
            done, running = await asyncio.wait(calls, timeout=15,
                                               return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
            assert len(done) == 1 and len(running) == 1, "one call ends with its host"
            async with asyncio.timeout(10):  # records are written behind the call
                while len(await open_calls(http, layout.api)) != 1:
                    await asyncio.sleep(0.1)

            # New calls go to the host that is left.
            result = await call_number(tmp_path, layout.sip_port, NUMBER, stay_s=1.0)
            assert result.succeeded, result.output

            hosts[0] = await start_media_host(tmp_path / "media-0")
            await until_hosts(http, layout.api, dict.fromkeys(HOSTS, "ok"))

            survivor = await asyncio.wait_for(running.pop(), WAIT_AFTER_GREETING_S + 30)
            assert survivor.succeeded, survivor.output  # hung up by the service, as meant
            async with asyncio.timeout(10):  # records are written behind the call
                while await open_calls(http, layout.api):
                    await asyncio.sleep(0.1)
            async with http.get(layout.api + "/calls", params={"direction": "inbound"}) as reply:
                records = (await reply.json())["items"]
            dispositions = sorted(record["disposition"] for record in records)
            assert dispositions.count("failed") == 1, records
    finally:
        for call in calls:
            call.cancel()
        for host in hosts:
            if host.returncode is None:
                os.killpg(host.pid, signal.SIGTERM)
                await host.wait()
        if node is not None:
            assert await node.interrupt() == 0


async def test_a_media_host_refuses_a_link_without_the_secret(tmp_path: Path) -> None:
    layout = write_configs(tmp_path)
    host = await start_media_host(tmp_path / "media-1")
    try:
        reader = writer = None
        async with asyncio.timeout(READY_S):
            while reader is None:
                try:
                    reader, writer = await asyncio.open_connection(HOSTS[1], layout.link_ports[1])
                except OSError:
                    await asyncio.sleep(0.1)
        assert writer is not None
        challenge = await reader.readline()
        assert challenge.startswith(b'* {"type":"challenge"')
        writer.write(b'* {"type":"controller_proof","proof":"00","nonce":"11","node":"x",'
                     b'"term":1,"edges":["127.0.0.1:5060"],"sibling_hosts":[],'
                     b'"sibling_ports":[5080,2]}\n')  # fmt: skip
        async with asyncio.timeout(PROOF_TIMEOUT_S + 5):
            answer = split_line(await reader.read())  # one line, then closed
        assert answer == Refused(reason="wrong proof: not the cluster's secret")
        writer.close()
        # Nor does a silent one get anything but the challenge.
        with socket.create_connection((HOSTS[1], layout.link_ports[1]), timeout=10) as quiet:
            quiet.settimeout(PROOF_TIMEOUT_S + 10)
            received = b""
            while chunk := quiet.recv(4096):
                received += chunk
            assert received.count(b"\n") == 1 and b"challenge" in received
    finally:
        os.killpg(host.pid, signal.SIGTERM)
        await host.wait()


def write_cluster_configs(folder: Path, redis_port: int) -> list[Layout]:
    """Two nodes (a, b) on one SQLite file and one Redis, and one media host (on HOSTS[0])
    whose workers hang up a leg after 3 s without RTP."""
    first_sip, first_rtp, link = free_port_block(2), free_port_block(80), free_port()
    sip_ports = [free_port(), free_port()]
    edges = ", ".join(f'"127.0.0.1:{port}"' for port in sip_ports)
    layouts = []
    for index, node in enumerate(("a", "b")):
        sip, api = sip_ports[index], free_port()
        (folder / node).mkdir()
        (folder / node / "config.toml").write_text(f"""
[data]
dir = "state"
[database]
url = "sqlite+aiosqlite:///{folder / "shared.sqlite3"}"
[redis]
port = {redis_port}
managed = false
[sip]
port = {sip}
rpc_port = {free_port()}
[api]
port = {api}
[workers]
max_workers = 2
spare_legs = 4
first_sip_port = {first_sip}
first_rtp_port = {first_rtp}
[cluster]
node = "{node}"
node_index = {index}
secret = "{SECRET}"
media_hosts = ["{HOSTS[0]}:{link}"]
edges = [{edges}]
""")  # fmt: skip
        layouts.append(Layout(sip, f"http://127.0.0.1:{api}/api/v1", first_sip, first_rtp,
                              (link, link)))  # fmt: skip
    (folder / "media").mkdir()
    (folder / "media" / "config.toml").write_text(f"""
[workers]
host = "{HOSTS[0]}"
max_workers = 2
first_sip_port = {first_sip}
first_rtp_port = {first_rtp}
media_timeout = {MEDIA_TIMEOUT_S}
[cluster]
secret = "{SECRET}"
[media]
port = {link}
metrics_port = {free_port()}
""")  # fmt: skip
    return layouts


MEDIA_TIMEOUT_S = 3
EXTENSION = "1001"


async def until_active(http: aiohttp.ClientSession, api: str) -> None:
    async with asyncio.timeout(READY_S):
        while True:
            body = await health(http, api)
            hosts = set(body["checks"]["media_hosts"].values())
            if (
                body["controller"]["role"] == "active"
                and hosts == {"ok"}
                and (body["checks"]["media_workers"] == "ok")
            ):
                return
            await asyncio.sleep(0.1)


async def legs_in_use(http: aiohttp.ClientSession, api: str) -> float:
    async with http.get(api.removesuffix("/api/v1") + "/metrics") as reply:
        text = await reply.text()
    return float(text.split("\npbx_worker_legs_in_use ", 1)[1].split()[0])


async def until_more_packets(phone_call: TestCall, more: int) -> None:
    start = await phone_call.rx_packets()
    async with asyncio.timeout(15):
        while await phone_call.rx_packets() < start + more:
            await asyncio.sleep(0.1)


@dataclass
class TwoNodes:
    """Nodes a (active) and b (standby) and one media host, with the number in place."""

    a: Layout
    b: Layout
    node_a: RunningService
    node_b: RunningService
    http: aiohttp.ClientSession


@contextlib.asynccontextmanager
async def two_nodes_and_a_host(tmp_path: Path) -> AsyncIterator[TwoNodes]:
    redis_port = free_port()
    redis = ManagedRedis("127.0.0.1", redis_port, tmp_path / "redis")
    await redis.start()
    a, b = write_cluster_configs(tmp_path, redis_port)
    node_a: RunningService | None = None
    node_b: RunningService | None = None
    host: asyncio.subprocess.Process | None = None
    try:
        node_a = await start_service(tmp_path / "a", new_session=True)
        host = await start_media_host(tmp_path / "media")
        auth = {"Authorization": f"Bearer {node_a.admin_token}"}
        async with aiohttp.ClientSession(headers=auth) as http:
            await until_active(http, a.api)
            node_b = await start_service(tmp_path / "b")
            line = {"number": NUMBER, "greeting": {"text": "Welcome."},
                    "default_destination": {"type": "hangup"}}  # fmt: skip
            async with http.post(a.api + "/numbers", json=line) as reply:
                assert reply.status == 201, await reply.text()
            yield TwoNodes(a, b, node_a, node_b, http)
    finally:
        if host is not None and host.returncode is None:
            os.killpg(host.pid, signal.SIGTERM)
            await host.wait()
        if node_b is not None:
            assert await node_b.interrupt() == 0
        if node_a is not None and node_a.process.returncode is None:
            os.killpg(node_a.process.pid, signal.SIGKILL)
        await redis.stop()


async def agent_at(nodes: TwoNodes, desk: TestPhone, edge: Layout) -> int:
    """A user with extension EXTENSION whose desk is registered at `edge`: their id."""
    http, api = nodes.http, nodes.a.api
    async with http.post(api + "/users", json={"name": "Agent"}) as reply:
        user = await reply.json()
    async with http.put(f"{api}/users/{user['id']}/extension",
                        json={"extension": EXTENSION}) as reply:  # fmt: skip
        sip = (await reply.json())["sip"]
    assert await desk.register(
        sip["username"], sip["password"], sip["domain"], "127.0.0.1", edge.sip_port
    ) == 200  # fmt: skip
    user_id: int = user["id"]
    return user_id


async def bridged_call(
    nodes: TwoNodes, edge: Layout, desk: TestPhone, caller: TestPhone, folder: Path
) -> tuple[TestCall, TestCall]:
    """The provider's caller dials the desk's extension through `edge`, where the desk is
    registered too; both send audio: (the caller's call, the desk's)."""
    await agent_at(nodes, desk, edge)
    await until_the_edge_takes_calls(folder, edge.sip_port)
    await caller.open_unregistered("4930111333")
    talk = await caller.call(f"sip:{NUMBER}@127.0.0.1:{edge.sip_port}")
    await asyncio.wait_for(talk.answered, 15)
    await play_tone(talk)
    await talk.send_dtmf(EXTENSION)
    ringing = await desk.next_incoming(timeout=15)
    await ringing.answer()
    await play_tone(ringing)
    await until_more_packets(ringing, 50)
    return talk, ringing


async def test_a_bridged_call_goes_on_when_the_active_node_dies(tmp_path: Path) -> None:
    desk, caller = TestPhone(), TestPhone()
    try:
        async with two_nodes_and_a_host(tmp_path) as nodes:
            a, b, http = nodes.a, nodes.b, nodes.http
            talk, ringing = await bridged_call(nodes, a, desk, caller, tmp_path)

            os.killpg(nodes.node_a.process.pid, signal.SIGKILL)  # controller, edge and all
            await nodes.node_a.process.wait()
            await until_active(http, b.api)
            # The media host kept the bridge: the desk still hears the caller.
            await until_more_packets(ringing, 50)
            assert not ringing.ended.done() and not talk.ended.done()

            # The caller hangs up (its BYE went to the dead edge): its audio stops, and the
            # worker (node b's now) ends the call after media_timeout.
            await talk.hangup()
            async with asyncio.timeout(MEDIA_TIMEOUT_S + 30):
                while await legs_in_use(http, b.api) > 0:
                    await asyncio.sleep(0.2)
            result = await call_number(tmp_path, b.sip_port, NUMBER, stay_s=0.5)
            assert result.succeeded, result.output
            # The desk never hears the worker's BYE (sent to the dead edge): its user hangs up.
            await ringing.hangup()
            await asyncio.wait_for(asyncio.gather(talk.ended, ringing.ended), 40)
    finally:
        desk.close()
        caller.close()


async def test_a_call_through_the_standbys_edge_ends_properly_after_the_takeover(
    tmp_path: Path,
) -> None:
    """Caller and desk reach the cluster through node b's edge, which takes calls for node
    a's workers; the desk is rung through it too. When node a dies the call goes on, and the
    caller's hang-up reaches the desk: none of its signalling passed the dead edge."""
    desk, caller = TestPhone(), TestPhone()
    try:
        async with two_nodes_and_a_host(tmp_path) as nodes:
            talk, ringing = await bridged_call(nodes, nodes.b, desk, caller, tmp_path)
            os.killpg(nodes.node_a.process.pid, signal.SIGKILL)
            await nodes.node_a.process.wait()
            await until_active(nodes.http, nodes.b.api)
            await until_more_packets(ringing, 50)
            await talk.hangup()
            assert await asyncio.wait_for(talk.ended, 10) == 200
            assert await asyncio.wait_for(ringing.ended, 10) == 200, "the worker's BYE"
    finally:
        desk.close()
        caller.close()


async def play_tone(call: TestCall) -> None:
    await call.play(Path(tone_file()), loop=True)


def kamailio_of(pid: int) -> int:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return next(
        int(c) for c in children if Path(f"/proc/{c}/comm").read_text().strip() == "kamailio"
    )


async def test_kill_9_of_the_active_edge_stops_its_node_and_the_standby_takes_over(
    tmp_path: Path,
) -> None:
    stranded: asyncio.Task[SippResult] | None = None
    try:
        async with two_nodes_and_a_host(tmp_path) as nodes:
            a, b, http = nodes.a, nodes.b, nodes.http
            await until_the_edge_takes_calls(tmp_path, a.sip_port)
            # A caller in the greeting's wait when the edge dies.
            stranded = asyncio.create_task(call_number(
                tmp_path, a.sip_port, NUMBER, hang_up="remote", timeout_s=20,
            ))  # fmt: skip
            async with asyncio.timeout(15):
                while not await open_calls(http, b.api):
                    await asyncio.sleep(0.1)

            os.kill(kamailio_of(nodes.node_a.process.pid), signal.SIGKILL)
            # The node does not run without its edge: it stops, and gives the lease up.
            assert await asyncio.wait_for(nodes.node_a.process.wait(), 30) != 0
            await until_active(http, b.api)
            result = await call_number(tmp_path, b.sip_port, NUMBER, stay_s=0.5)
            assert result.succeeded, result.output
            async with asyncio.timeout(10):  # the stranded call's record is closed
                while await open_calls(http, b.api):
                    await asyncio.sleep(0.1)
    finally:
        if stranded is not None:
            stranded.cancel()


QUEUE_NUMBER = "4930999200"


async def waiting_in(http: aiohttp.ClientSession, api: str, queue_id: int) -> list[dict[str, Any]]:
    """Callers in line, in order (not those whose agent answered: they talk)."""
    async with http.get(f"{api}/queues/{queue_id}/waiting") as reply:
        assert reply.status == 200, await reply.text()
        items: list[dict[str, Any]] = (await reply.json())["items"]
    return [item for item in items if not item["ringing"]]


async def until_waiting(
    http: aiohttp.ClientSession, api: str, queue_id: int, callers: int
) -> list[dict[str, Any]]:
    async with asyncio.timeout(READY_S):
        while len(items := await waiting_in(http, api, queue_id)) != callers:
            await asyncio.sleep(0.1)
    return items


async def queue_with_an_agent(nodes: TwoNodes, desk: TestPhone) -> tuple[int, int]:
    """An agent (not ready) whose desk is registered at node b's edge, and a queue whose
    number takes callers straight in: (the agent's user id, the queue id)."""
    user_id = await agent_at(nodes, desk, nodes.b)
    http, api = nodes.http, nodes.a.api
    queue = {"name": "Support", "members": [user_id], "when_no_agents": "wait",
             "wrap_up_time": 0, "announce_interval": 0}  # fmt: skip
    async with http.post(api + "/queues", json=queue) as reply:
        assert reply.status == 201, await reply.text()
        queue_id: int = (await reply.json())["id"]
    line = {"number": QUEUE_NUMBER, "greeting": {"text": "Hello."}, "extension_dialing": False,
            "default_destination": {"type": "queue", "id": queue_id}}  # fmt: skip
    async with http.post(api + "/numbers", json=line) as reply:
        assert reply.status == 201, await reply.text()
    return user_id, queue_id


def sipp_into_the_queue(folder: Path, caller: str, edge: Layout) -> asyncio.Task[SippResult]:
    """A caller who speaks (the media host hangs up silent legs) until hung up; SIPp, since
    the test's one PJSUA2 endpoint holds 4 calls at most."""
    return asyncio.create_task(call_number(
        folder, edge.sip_port, QUEUE_NUMBER, caller=caller, hang_up="remote", tone_hz=440,
        timeout_s=120,
    ))  # fmt: skip


async def test_queue_callers_keep_their_places_and_talks_when_the_active_node_dies(
    tmp_path: Path,
) -> None:
    """Through node b's edge, one caller talks to the queue's agent and two wait when node a
    dies. Node b takes their worker over: the talk goes on and its record ends at its real
    end; the two wait on in the same order, for as long as before; a caller who calls after
    the takeover waits behind them, and the agent gets the first of them next."""
    desk, caller = TestPhone(), TestPhone()
    waiting: list[asyncio.Task[SippResult]] = []
    try:
        async with two_nodes_and_a_host(tmp_path) as nodes:
            http, a, b = nodes.http, nodes.a, nodes.b
            user_id, queue_id = await queue_with_an_agent(nodes, desk)
            await until_the_edge_takes_calls(tmp_path, b.sip_port)
            async with http.put(f"{a.api}/users/{user_id}/presence",
                                json={"status": "ready"}) as reply:  # fmt: skip
                assert reply.status == 200, await reply.text()
            await caller.open_unregistered("4930111200")
            talk = await caller.call(f"sip:{QUEUE_NUMBER}@127.0.0.1:{b.sip_port}")
            await asyncio.wait_for(talk.answered, 15)
            await play_tone(talk)
            agent_talk = await desk.next_incoming(timeout=15)
            await agent_talk.answer()
            await play_tone(agent_talk)
            for index in (1, 2):
                waiting.append(sipp_into_the_queue(tmp_path, f"493011120{index}", b))
                await until_waiting(http, a.api, queue_id, index)
            before = await waiting_in(http, a.api, queue_id)
            async with asyncio.timeout(10):  # its record is written behind the call
                while not (talked := [c for c in await open_calls(http, a.api)
                                      if c["connected_to"] == EXTENSION]):  # fmt: skip
                    await asyncio.sleep(0.1)

            os.killpg(nodes.node_a.process.pid, signal.SIGKILL)
            await nodes.node_a.process.wait()
            await until_active(http, b.api)
            after = await until_waiting(http, b.api, queue_id, 2)
            assert [w["call_id"] for w in after] == [w["call_id"] for w in before]
            assert all(
                later["wait_seconds"] > earlier["wait_seconds"]
                for earlier, later in zip(before, after, strict=True)
            ), (before, after)
            await until_more_packets(agent_talk, 50)  # the talk goes on
            assert not talk.ended.done() and not any(task.done() for task in waiting)

            waiting.append(sipp_into_the_queue(tmp_path, "4930111203", b))
            latest = await until_waiting(http, b.api, queue_id, 3)
            assert [w["call_id"] for w in latest[:2]] == [w["call_id"] for w in before]

            # The talk ends: its record says so now, as any other call's would.
            await talk.hangup()
            assert await asyncio.wait_for(agent_talk.ended, 10) == 200
            record = await until_closed(http, b.api, talked[0]["id"])
            assert (record["disposition"], record["hangup_by"]) == ("answered", "caller"), record
            # The agent is free again, and gets the first caller in line.
            ringing = await desk.next_incoming(timeout=15)
            await ringing.answer()
            first, later = before[0]["call_id"], before[1]["call_id"]
            async with asyncio.timeout(10):
                while (await call_record(http, b.api, first))["connected_to"] != EXTENSION:
                    await asyncio.sleep(0.1)
            assert [w["call_id"] for w in await waiting_in(http, b.api, queue_id)] == [
                before[1]["call_id"], latest[2]["call_id"]
            ]  # fmt: skip
            await ringing.hangup()
            result = await asyncio.wait_for(waiting[0], 10)
            assert result.succeeded, result.output
            record = await until_closed(http, b.api, first)
            assert (record["disposition"], record["hangup_by"]) == ("answered", "agent"), record
            taken_over = await events_of(http, b.api, "call_taken_over", 3)
            assert {e["call_id"] for e in taken_over} == {talked[0]["id"], first, later}
            assert {e["node"] for e in taken_over} == {"b"}
        # Node b's stop hangs the others up.
        for result in await asyncio.wait_for(asyncio.gather(*waiting[1:]), 30):
            assert result.succeeded, result.output
    finally:
        desk.close()
        caller.close()
        for task in waiting:
            task.cancel()


async def events_of(
    http: aiohttp.ClientSession, api: str, type_: str, count: int
) -> list[dict[str, Any]]:
    """The first `count` events of `type_` in the stream's history."""
    url = api.replace("http://", "ws://") + f"/events?since=0&types={type_}"
    found: list[dict[str, Any]] = []
    async with http.ws_connect(url) as ws, asyncio.timeout(10):
        while len(found) < count:
            found.append(json.loads((await ws.receive()).data)["data"])
    return found


async def call_record(http: aiohttp.ClientSession, api: str, call_id: int) -> dict[str, Any]:
    async with http.get(f"{api}/calls/{call_id}") as reply:
        assert reply.status == 200, await reply.text()
        found: dict[str, Any] = await reply.json()
    return found


async def until_closed(http: aiohttp.ClientSession, api: str, call_id: int) -> dict[str, Any]:
    async with asyncio.timeout(10):
        while (record := await call_record(http, api, call_id))["disposition"] is None:
            await asyncio.sleep(0.1)
    return record
