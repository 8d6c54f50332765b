"""Free loopback ports for the services a test starts."""

from __future__ import annotations

import os
import socket

_handed_out: set[int] = set()


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port free for both TCP and UDP on 127.0.0.1, never the same one twice per test run."""
    while True:
        with socket.socket(socket.AF_INET, kind) as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        if port in _handed_out:
            continue
        other = socket.SOCK_DGRAM if kind == socket.SOCK_STREAM else socket.SOCK_STREAM
        with socket.socket(socket.AF_INET, other) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port


# Where the scan for port blocks starts; two suites run side by side on one machine (a helper's
# worktree, a bench) set different bases so that they do not race for the same block.
PORT_BASE_ENV = "PBX_TEST_PORT_BASE"


# Blocks may reach the top of the port range: from a base of 59000 the ports below 60000 held
# only a dozen blocks of 80, fewer than one suite asks for.
def free_port_block(count: int, start: int | None = None, stop: int = 65536) -> int:
    """The first of `count` consecutive ports free for TCP and UDP (media workers, RTP)."""
    candidate = start if start is not None else int(os.environ.get(PORT_BASE_ENV, "30000"))
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
