"""Free loopback ports for the services a test starts."""

from __future__ import annotations

import os
import socket

_handed_out: set[int] = set()


# Single ports come from 20000 to 10000 below the blocks: below the kernel's ephemeral range
# (32768-60999 on Linux) and below `pbx run`'s default RTP ports (20000 on). A port that bind(0)
# picked lies where every socket opened without a port lands: once one of those took a SIPp
# desk phone's port between its registration and its start.
def free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1, never the same one twice per test run."""
    return free_port_block(1, *_single_ports())


def sipp_media_port() -> int:
    """A port for SIPp's `-mp`: SIPp binds it for audio and the port two above for video."""
    return free_port_block(3, *_single_ports())


# Where the scan for port blocks starts; two suites run side by side on one machine (a helper's
# worktree, a bench) set different bases so that they do not race for the same block.
PORT_BASE_ENV = "PBX_TEST_PORT_BASE"


# Blocks may reach the top of the port range: from a base of 59000 the ports below 60000 held
# only a dozen blocks of 80, fewer than one suite asks for.
def free_port_block(count: int, start: int | None = None, stop: int = 65536) -> int:
    """The first of `count` consecutive ports free for TCP and UDP (media workers, RTP)."""
    candidate = start if start is not None else _blocks_start()
    while candidate + count <= stop:
        block = range(candidate, candidate + count)
        if not _handed_out.intersection(block) and all(_free_both(p) for p in block):
            _handed_out.update(block)
            return candidate
        candidate += count
    raise RuntimeError(f"no {count} consecutive free ports from {start or 'the base'} to {stop}")


def _free_both(port: int) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def _blocks_start() -> int:
    return int(os.environ.get(PORT_BASE_ENV, "30000"))


def _single_ports() -> tuple[int, int]:
    blocks_start = _blocks_start()
    return max(1024, blocks_start - 20000), max(1024, blocks_start - 10000)
