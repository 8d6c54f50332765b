"""A redis-server the service starts itself: append-only file in the data dir, loopback only."""

from __future__ import annotations

import socket
from pathlib import Path

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from core.child_process import ChildProcess, check_ports_free

READY_TIMEOUT_SECONDS = 10.0
_PING_TIMEOUT_SECONDS = 0.5


class ManagedRedis:
    def __init__(
        self, host: str, port: int, data_dir: Path, binary: str = "/usr/bin/redis-server"
    ) -> None:
        self.host = host
        self.port = port
        self.data_dir = data_dir
        self._process = ChildProcess(
            "redis-server",
            [
                binary,
                "--bind", host,
                "--port", str(port),
                "--dir", str(data_dir),
                # Live state survives a restart; at most one second of writes is at risk.
                "--appendonly", "yes",
                "--appendfsync", "everysec",
                "--save", "",
                # Background work 2 times a second instead of 10: an idle node spends a
                # tenth of a percent of a core less (measured), and no key needs expiring
                # to the tenth of a second.
                "--hz", "2",
                "--daemonize", "no",
                "--protected-mode", "yes",
            ],
        )  # fmt: skip

    @property
    def pid(self) -> int | None:
        return self._process.pid

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    async def start(self) -> None:
        """Start redis-server and return once it answers PING; ChildProcessFailed otherwise."""
        check_ports_free("redis-server", [(self.host, self.port, socket.SOCK_STREAM)])
        self.data_dir.mkdir(parents=True, exist_ok=True)
        await self._process.start()
        try:
            await self._process.wait_ready(self._answers_ping, READY_TIMEOUT_SECONDS)
        except BaseException:
            await self._process.stop()
            raise

    async def wait(self) -> int:
        """Return redis-server's exit code once it exits (for a supervisor)."""
        return await self._process.wait()

    async def stop(self) -> None:
        # SIGTERM makes Redis flush the append-only file before it exits.
        await self._process.stop(timeout=10.0)

    async def _answers_ping(self) -> bool:
        client = Redis(
            host=self.host,
            port=self.port,
            socket_connect_timeout=_PING_TIMEOUT_SECONDS,
            socket_timeout=_PING_TIMEOUT_SECONDS,
        )
        try:
            return bool(await client.ping())
        except (RedisConnectionError, RedisTimeoutError):
            # Not listening yet, or still loading the append-only file (BusyLoadingError).
            return False
        finally:
            await client.aclose()
