"""Speech nobody listens to is dropped by the kernel, not read by the worker.

A caller in the greeting, a menu or a queue sends 50 speech packets a second that nothing in
the worker uses: the prompt or hold music plays to them, and only their RFC 4733 digits
matter. Reading each packet wakes the worker's loop, costs a `select` and a `recvfrom`, and
was most of the CPU a waiting caller cost (measured: the UA loops took 28 % of a core for 300
waiting callers, the rest of the worker about 15 %).

So while a leg's audio goes nowhere (no peer, no recorder), a classic BPF socket filter on its
RTP socket drops packets of its speech payload type, except one in KEEP_ONE_IN by sequence
number: those keep the dead-media sweep (pbx.media_timeout) and pjmedia's address latching
fed. Digits (the telephone-event payload type), comfort noise and anything else pass. The
moment the leg is bridged or recorded, the filter comes off.
"""

from __future__ import annotations

import ctypes
import os
import socket
import stat
import struct

# One speech packet in this many (by RTP sequence number) still reaches the worker: every
# 0.64 s at 20 ms packets, well inside any media timeout.
KEEP_ONE_IN = 32

# From <linux/filter.h> and <asm-generic/socket.h>.
_SO_ATTACH_FILTER = 26
_SO_DETACH_FILTER = 27
_LOAD_BYTE = 0x00 | 0x10 | 0x20  # BPF_LD | BPF_B | BPF_ABS
_LOAD_HALF = 0x00 | 0x08 | 0x20  # BPF_LD | BPF_H | BPF_ABS
_AND = 0x04 | 0x50  # BPF_ALU | BPF_AND | BPF_K
_JUMP_IF_EQUAL = 0x05 | 0x10  # BPF_JMP | BPF_JEQ | BPF_K
_RETURN = 0x06  # BPF_RET | BPF_K
_ACCEPT, _DROP = 0xFFFFFFFF, 0
# A UDP socket's filter sees the packet from the UDP header on; the RTP header follows it.
_UDP_HEADER = 8
_RTP_PAYLOAD_TYPE = _UDP_HEADER + 1  # marker bit + 7-bit payload type
_RTP_SEQUENCE = _UDP_HEADER + 2


def _instruction(code: int, k: int, jump_true: int = 0, jump_false: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jump_true, jump_false, k)


def speech_drop_program(payload_type: int, keep_one_in: int = KEEP_ONE_IN) -> bytes:
    """The filter: drop RTP packets of `payload_type` unless seq % keep_one_in == 0."""
    if not 0 <= payload_type <= 127:
        raise ValueError(f"RTP payload type {payload_type} is not 0-127")
    if keep_one_in < 1 or keep_one_in & (keep_one_in - 1):
        raise ValueError(f"keep_one_in must be a power of two, not {keep_one_in}")
    return b"".join(
        (
            _instruction(_LOAD_BYTE, _RTP_PAYLOAD_TYPE),
            _instruction(_AND, 0x7F),
            _instruction(_JUMP_IF_EQUAL, payload_type, jump_false=3),  # not speech: accept
            _instruction(_LOAD_HALF, _RTP_SEQUENCE),
            _instruction(_AND, keep_one_in - 1),
            _instruction(_JUMP_IF_EQUAL, 0, jump_false=1),
            _instruction(_RETURN, _ACCEPT),
            _instruction(_RETURN, _DROP),
        )
    )


def attach(sock: socket.socket, program: bytes) -> None:
    """Put `program` on `sock` (replacing any filter); the kernel copies it."""
    buffer = ctypes.create_string_buffer(program, len(program))
    # struct sock_fprog: unsigned short len; struct sock_filter *filter.
    fprog = struct.pack("=HxxxxxxQ", len(program) // 8, ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)


def detach(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_DETACH_FILTER, 0)
    except OSError as exc:  # ENOENT: it had none
        if exc.errno != 2:
            raise


def udp_socket_on(port: int, host: str) -> socket.socket | None:
    """A duplicate of this process's UDP socket bound to host:port, if there is one.

    pjsua does not hand out its RTP sockets, so they are found among our descriptors. Close
    the duplicate at once after use: held, it would keep the port bound after pjsua closes it.
    """
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            if not _is_socket(fd):
                continue
            sock = socket.socket(fileno=os.dup(fd))
        except OSError:
            continue  # closed in between, or the listing's own descriptor
        try:
            if (
                sock.type == socket.SOCK_DGRAM
                and sock.family == socket.AF_INET
                and sock.getsockname() == (host, port)
            ):
                return sock
        except OSError:
            pass
        sock.close()
    return None


def _is_socket(fd: int) -> bool:
    return stat.S_ISSOCK(os.fstat(fd).st_mode)
