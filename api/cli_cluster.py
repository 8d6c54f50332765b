"""`pbx cluster` (`make cluster`): the scale-out layout on one machine, each "host" on a
loopback address of its own: PostgreSQL and Redis on 127.0.0.1; two nodes, each a `pbx run`
with `[cluster]` set (controller and edge), on 127.0.0.2 and 127.0.0.3; two media hosts
(`pbx media`), which run every media worker, on 127.0.0.4 and 127.0.0.5. Which process plays
which role goes to <data>/cluster/roles.json once all are up; Ctrl-C stops everything and
removes that file. The database, the secret and the admin token are kept in <data>/cluster
for the next run."""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import os
import secrets
import signal
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import click

from api.cli_settings import command_settings, config_option
from api.routing import API_PREFIX
from core.child_process import ChildProcess
from core.postgres_server import PostgresServer
from core.redis_server import ManagedRedis
from core.settings import Settings
from migrations import upgrade_database

NODES = ("a", "b")
MEDIA_HOSTS = ("m1", "m2")
RTP_PORTS_PER_WORKER = 40
# From --base-port on: PostgreSQL, Redis, each edge's control socket (on 127.0.0.1), the
# media hosts' link port, then (from WORKER_PORTS_OFFSET) the workers' SIP ports and their
# RTP ranges, the same on each media host's address.
MEDIA_LINK_OFFSET = 2 + len(NODES)
MEDIA_METRICS_OFFSET = MEDIA_LINK_OFFSET + 1
WORKER_PORTS_OFFSET = 10
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Node:
    name: str
    address: str
    api_url: str
    edge: str  # host:port of its Kamailio
    process: ChildProcess


@dataclass(frozen=True)
class MediaHost:
    name: str
    address: str
    process: ChildProcess


@dataclass(frozen=True)
class Layout:
    """Where everything listens: the nodes, then the media hosts, each on its own address
    from the first on; PostgreSQL, Redis and the edges' control sockets on 127.0.0.1, from
    `base_port` on, and from there too the media hosts' link and workers' ports."""

    addresses: list[str]  # the nodes', then the media hosts'
    api_port: int
    sip_port: int
    base_port: int
    workers_per_host: int

    @property
    def node_addresses(self) -> list[str]:
        return self.addresses[: len(NODES)]

    @property
    def media_addresses(self) -> list[str]:
        return self.addresses[len(NODES) :]

    def rpc_port(self, index: int) -> int:
        return self.base_port + 2 + index

    @property
    def link_port(self) -> int:
        return self.base_port + MEDIA_LINK_OFFSET

    @property
    def media_metrics_port(self) -> int:
        return self.base_port + MEDIA_METRICS_OFFSET

    @property
    def worker_sip_port(self) -> int:
        return self.base_port + WORKER_PORTS_OFFSET

    @property
    def worker_rtp_port(self) -> int:
        return self.worker_sip_port + self.workers_per_host

    @property
    def last_port(self) -> int:
        return self.worker_rtp_port + self.workers_per_host * RTP_PORTS_PER_WORKER - 1


@click.command("cluster")
@config_option
@click.option(
    "--first-address",
    default="127.0.0.2",
    show_default=True,
    help="the first node's loopback address; the next node, then the media hosts take the "
    "next ones",
)
@click.option("--api-port", default=8080, show_default=True)
@click.option("--sip-port", default=5060, show_default=True)
@click.option(
    "--base-port",
    default=20000,
    show_default=True,
    help="the first port on 127.0.0.1 (databases, edges' control), and on the media hosts",
)
@click.option("--workers-per-host", default=50, show_default=True, type=click.IntRange(1, 500))
def cluster_command(
    config: Path | None, first_address: str, api_port: int, sip_port: int, base_port: int,
    workers_per_host: int,
) -> None:  # fmt: skip
    """Run PostgreSQL, Redis, two nodes and two media hosts on loopback addresses; Ctrl-C
    stops everything."""
    settings = command_settings(config)
    first = ipaddress.IPv4Address(first_address)
    if not first.is_loopback:
        raise click.ClickException(f"{first_address} is not a loopback address")
    layout = Layout(
        [str(first + index) for index in range(len(NODES) + len(MEDIA_HOSTS))], api_port,
        sip_port, base_port, workers_per_host,
    )  # fmt: skip
    if layout.last_port > 65535:
        raise click.ClickException(f"--base-port {base_port}: the ports would pass 65535")
    asyncio.run(_run_cluster(settings, layout))


async def _run_cluster(settings: Settings, layout: Layout) -> None:
    folder = (settings.data_dir / "cluster").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    roles_file = folder / "roles.json"
    roles_file.unlink(missing_ok=True)
    secret = _kept(folder / "secret")
    token = _kept(folder / "admin-token")
    postgres = PostgresServer(postgres_folder(folder), layout.base_port)
    redis = ManagedRedis("127.0.0.1", layout.base_port + 1, folder / "redis")
    nodes: list[Node] = []
    media: list[MediaHost] = []
    try:
        await asyncio.to_thread(postgres.start)
        database = await asyncio.to_thread(postgres.database, "pbx")
        await redis.start()
        await asyncio.to_thread(upgrade_database, database)  # once, before any node starts
        for index, name in enumerate(MEDIA_HOSTS):
            config = _media_config(layout, index, secret, folder)
            media.append(await _start_media_host(name, layout.media_addresses[index], config))
        for index in range(len(NODES)):
            config = _node_config(layout, index, database, redis.port, secret, folder)
            nodes.append(await _start_node(layout, index, config, token))
        await _until_ready(nodes)
        roles = _roles(nodes, media, postgres, redis)
        roles_file.write_text(json.dumps(roles, indent=2) + "\n")
        _print_banner(nodes, media, token, folder)
        await _until_signal()
    finally:
        roles_file.unlink(missing_ok=True)
        await asyncio.gather(*(node.process.stop(STOP_TIMEOUT_S) for node in nodes))
        await asyncio.gather(*(host.process.stop(STOP_TIMEOUT_S) for host in media))
        await redis.stop()
        await asyncio.to_thread(postgres.stop)


def postgres_folder(cluster: Path) -> Path:
    """<cluster>/postgresql, unless PostgreSQL's own user (root may not run it) could not
    reach it (a folder under /root): then a folder of its own under /var/tmp, named after
    the cluster's, kept across runs and reboots as the rest is."""
    folder = cluster / "postgresql"
    if os.geteuid() != 0 or all(p.stat().st_mode & stat.S_IXOTH for p in cluster.parents):
        return folder
    digest = hashlib.sha256(str(cluster).encode()).hexdigest()[:12]
    return Path("/var/tmp") / f"pbx-cluster-postgresql-{digest}"


def _kept(path: Path) -> str:
    """A secret made on the first run and kept (0600) for the next."""
    if not path.exists():
        _write_private(path, secrets.token_urlsafe(24) + "\n")
    return path.read_text().strip()


def _write_private(path: Path, text: str) -> None:
    """Only its owner reads it (secrets, passwords), and it is whole or absent."""
    partial = path.with_suffix(path.suffix + ".partial")
    partial.unlink(missing_ok=True)
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)
    partial.replace(path)


def _node_config(
    layout: Layout, index: int, database: str, redis_port: int, secret: str, cluster: Path
) -> Path:
    name, address = NODES[index], layout.addresses[index]
    folder = cluster / f"node-{name}"
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "config.toml"  # with the database's password and the secret
    _write_private(config, f"""# Written by `pbx cluster` at each start.
[data]
dir = "{folder / "state"}"
[database]
url = "{database}"
[redis]
port = {redis_port}
managed = false
[sip]
host = "{address}"
port = {layout.sip_port}
rpc_port = {layout.rpc_port(index)}
[api]
host = "{address}"
port = {layout.api_port}
[workers]
max_workers = {layout.workers_per_host}
first_sip_port = {layout.worker_sip_port}
first_rtp_port = {layout.worker_rtp_port}
rtp_ports_per_worker = {RTP_PORTS_PER_WORKER}
[cluster]
node = "{name}"
node_index = {index}
secret = "{secret}"
api_url = "http://{address}:{layout.api_port}"
media_hosts = [{", ".join(f'"{a}:{layout.link_port}"' for a in layout.media_addresses)}]
edges = [{", ".join(f'"{a}:{layout.sip_port}"' for a in layout.node_addresses)}]
""")  # fmt: skip
    return config


def _media_config(layout: Layout, index: int, secret: str, cluster: Path) -> Path:
    folder = cluster / f"media-{MEDIA_HOSTS[index]}"
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "config.toml"
    _write_private(config, f"""# Written by `pbx cluster` at each start.
[workers]
host = "{layout.media_addresses[index]}"
max_workers = {layout.workers_per_host}
first_sip_port = {layout.worker_sip_port}
first_rtp_port = {layout.worker_rtp_port}
rtp_ports_per_worker = {RTP_PORTS_PER_WORKER}
[media]
name = "{MEDIA_HOSTS[index]}"
port = {layout.link_port}
metrics_host = "{layout.media_addresses[index]}"
metrics_port = {layout.media_metrics_port}
[cluster]
secret = "{secret}"
""")  # fmt: skip
    return config


async def _start_media_host(name: str, address: str, config: Path) -> MediaHost:
    process = ChildProcess(f"media-{name}", [_pbx(), "media"], cwd=config.parent,
                           env=_child_env(config))  # fmt: skip
    await process.start()
    return MediaHost(name, address, process)


def _pbx() -> str:
    return str(Path(sys.executable).parent / "pbx")


def _child_env(config: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PBX_")}
    env["PBX_CONFIG"] = str(config)
    return env


async def _start_node(layout: Layout, index: int, config: Path, token: str) -> Node:
    name, address = NODES[index], layout.addresses[index]
    env = {**_child_env(config), "PBX_ADMIN_TOKEN": token}
    process = ChildProcess(f"node-{name}", [_pbx(), "run"], cwd=config.parent, env=env)
    await process.start()
    api_url = f"http://{address}:{layout.api_port}"
    return Node(name, address, api_url, f"{address}:{layout.sip_port}", process)


async def _until_ready(nodes: list[Node]) -> None:
    """Every node answers, and the active one runs workers on every media host."""
    async with aiohttp.ClientSession() as http:

        async def health(node: Node) -> dict[str, Any] | None:
            try:
                async with http.get(node.api_url + API_PREFIX + "/health") as reply:
                    body: dict[str, Any] = await reply.json()
                    return body if reply.status == 200 else None
            except aiohttp.ClientError:
                return None

        for node in nodes:

            async def answers(node: Node = node) -> bool:
                return await health(node) is not None

            await node.process.wait_ready(answers, READY_TIMEOUT_S)

        async def runs_calls() -> bool:
            for node in nodes:
                found = await health(node)
                if found is not None and found["controller"]["role"] == "active":
                    checks = found["checks"]
                    hosts = checks["media_hosts"].values()
                    return checks["media_workers"] == "ok" and all(h == "ok" for h in hosts)
            return False

        await nodes[0].process.wait_ready(runs_calls, READY_TIMEOUT_S)


def _roles(
    nodes: list[Node], media: list[MediaHost], postgres: PostgresServer, redis: ManagedRedis
) -> dict[str, Any]:
    processes: list[dict[str, Any]] = [
        {"role": "postgresql", "address": "127.0.0.1", "pid": postgres.pid},
        {"role": "redis", "address": "127.0.0.1", "pid": redis.pid},
    ]
    for node in nodes:
        pid = node.process.pid
        processes.append({"role": "controller", "address": node.address, "pid": pid})
        for child in _children(pid):
            if _command_name(child) == "kamailio":
                processes.append({"role": "edge", "address": node.address, "pid": child})
    for host in media:
        processes.append({"role": "media", "address": host.address, "pid": host.process.pid})
    return {
        "apis": [node.api_url for node in nodes],
        "edges": [node.edge for node in nodes],
        "trunk_sources": ["127.0.0.1"],
        "processes": processes,
    }


def _children(pid: int | None) -> list[int]:
    if pid is None:
        return []
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(each) for each in text.split()]


def _command_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _print_banner(nodes: list[Node], media: list[MediaHost], token: str, folder: Path) -> None:
    lines = ["", "PBX cluster is running."]
    for node in nodes:
        lines.append(f"  node {node.name}: REST API {node.api_url}{API_PREFIX}, "
                     f"phones register at sip:{node.edge}")  # fmt: skip
    for host in media:
        lines.append(f"  media host {host.name}: workers on {host.address}")
    lines += [
        f"  Admin token          {token}   (any node's API)",
        f"  Roles                {folder / 'roles.json'}",
        "Press Ctrl-C to stop.",
        "",
    ]
    print("\n".join(lines), file=sys.stdout, flush=True)


async def _until_signal() -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
