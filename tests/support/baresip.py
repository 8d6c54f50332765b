"""A baresip desk phone (Debian's baresip-core) for tests: registered at the edge, answering by
itself, sending a 440 Hz tone, and driven by its console module (commands over UDP), as a
person at its keypad would drive it."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from pathlib import Path

from tests.support.ports import free_port

BARESIP = "baresip"
MODULES = "/usr/lib/baresip/modules"


class Baresip:
    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._process: asyncio.subprocess.Process | None = None
        self._output: list[str] = []
        self._reader: asyncio.Task[None] | None = None
        self._console = free_port()

    @property
    def output(self) -> str:
        return "".join(self._output)

    async def start(
        self, extension: str, password: str, domain: str, edge_host: str, edge_port: int
    ) -> None:
        """Register `extension` at the edge (returns once the registrar said 200)."""
        self._folder.mkdir(parents=True, exist_ok=True)
        (self._folder / "config").write_text(
            f"sip_listen 127.0.0.1:{free_port()}\n"
            f"module_path {MODULES}\n"
            "module g711.so\nmodule cons.so\nmodule ausine.so\nmodule aufile.so\n"
            # What each call carried, decoded, as WAV files (heard_files).
            f"module sndfile.so\nsnd_path {self._folder}\n"
            "module_app account.so\nmodule_app menu.so\n"
            f"cons_listen 127.0.0.1:{self._console}\n"
            f"audio_player aufile,{self._folder / 'heard.wav'}\n"
            "audio_source ausine,440\nausrc_srate 48000\nausrc_channels 2\n"
            "audio_alert aufile,/dev/null\n"
        )
        (self._folder / "accounts").write_text(
            f"<sip:{extension}@{domain}>;auth_pass={password};"
            f'outbound="sip:{edge_host}:{edge_port}";regint=600;answermode=auto\n'
        )
        self._process = await asyncio.create_subprocess_exec(
            BARESIP, "-f", str(self._folder),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        self._reader = asyncio.create_task(self._read())
        await self.wait_for(r"200 OK", timeout=10)  # the registration's answer

    def heard_files(self) -> list[Path]:
        """What the phone heard in each call, decoded (sndfile's "-dec" dumps), oldest first;
        complete once the call has ended."""
        return sorted(self._folder.glob("*-dec.wav"), key=lambda path: path.stat().st_mtime)

    async def command(self, text: str) -> None:
        """One console command, e.g. "/transfer 1002" (baresip's long commands)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.sendto(text.encode() + b"\n", ("127.0.0.1", self._console))
        finally:
            sock.close()

    async def wait_for(self, pattern: str, timeout: float = 10.0) -> str:
        """The first line of output (from now or before) matching `pattern`."""
        async with asyncio.timeout(timeout):
            while True:
                for line in "".join(self._output).splitlines():
                    if re.search(pattern, line):
                        return line
                await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self._process is not None and self._process.returncode is None:
            self._process.terminate()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await self._process.wait()
            if self._process.returncode is None:
                self._process.kill()
                await self._process.wait()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        while line := await self._process.stdout.readline():
            self._output.append(line.decode(errors="replace"))
