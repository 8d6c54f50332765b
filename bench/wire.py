"""Packets on the loopback wire, for benchmarks that time what the service does from outside.

A raw AF_PACKET socket on `lo` bound to IPv4 (so each packet is seen once: as it is received,
not also as it is sent), a classic BPF program in the kernel that keeps only the ports of
interest, and SO_TIMESTAMPNS: every packet carries the kernel's receive timestamp
(CLOCK_REALTIME, ns), taken when the sender's packet entered the loopback device, so how
quickly this process reads does not change the times. A thread only receives and keeps
(timestamp, frame); parsing (IPv4, UDP/TCP, SIP, RFC 4733) happens afterwards in pure
functions. Kernel drops are read from PACKET_STATISTICS. Needs root (CAP_NET_RAW); tcpdump is
not needed.
"""

from __future__ import annotations

import contextlib
import ctypes
import re
import socket
import struct
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

ETH_P_IP = 0x0800
IPPROTO_UDP, IPPROTO_TCP = 17, 6
TELEPHONE_EVENT_PT = 101
SO_TIMESTAMPNS = 35  # also the cmsg type (SCM_TIMESTAMPNS)
SO_RCVBUFFORCE = 33
SO_ATTACH_FILTER = 26
SOL_PACKET = 263
PACKET_STATISTICS = 6
PCAP_NANOSECONDS = 0xA1B23C4D  # pcap magic of a file with nanosecond timestamps
LINKTYPE_ETHERNET = 1


class CaptureError(Exception):
    """The capture cannot run here (no permission, no AF_PACKET)."""


# -- pure: frames, SIP, RTP events ----------------------------------------------------------


@dataclass(frozen=True)
class Packet:
    """One IPv4 UDP or TCP packet seen on lo; `ts` in seconds (kernel, CLOCK_REALTIME)."""

    ts: float
    proto: int
    src: int
    dst: int
    payload: bytes


def parse_frame(ts: float, frame: bytes) -> Packet | None:
    """A loopback frame (14-byte Ethernet header, zero MACs) -> Packet; None for anything
    that is not an unfragmented IPv4 UDP/TCP packet."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00":
        return None
    ip = frame[14:]
    if ip[0] >> 4 != 4:
        return None
    ihl = (ip[0] & 0x0F) * 4
    total = struct.unpack("!H", ip[2:4])[0]
    if struct.unpack("!H", ip[6:8])[0] & 0x3FFF:  # MF flag or an offset: a fragment
        return None
    proto = ip[9]
    body = ip[ihl:total]
    if proto == IPPROTO_UDP and len(body) >= 8:
        src, dst = struct.unpack("!HH", body[:4])
        return Packet(ts, proto, src, dst, body[8:])
    if proto == IPPROTO_TCP and len(body) >= 20:
        src, dst = struct.unpack("!HH", body[:4])
        return Packet(ts, proto, src, dst, body[(body[12] >> 4) * 4 :])
    return None


Insn = tuple[int, int, int, int]  # classic BPF: code, jt, jf, k

# classic BPF opcodes
_LDH_ABS, _LDB_ABS, _LDH_IND, _LDXB_MSH = 0x28, 0x30, 0x48, 0xB1
_JEQ, _JSET, _RET = 0x15, 0x45, 0x06


def compile_port_filter(
    udp_src: Iterable[int] = (), udp_dst: Iterable[int] = (), tcp_either: Iterable[int] = ()
) -> list[Insn]:
    """A classic BPF program over loopback frames: accept (whole) an unfragmented IPv4 UDP
    packet whose source port is in `udp_src` or destination port in `udp_dst`, and a TCP
    packet with either port in `tcp_either`; drop everything else in the kernel."""
    # (protocol, [(offset of the port after the IP header, ports)])
    groups = [
        (IPPROTO_UDP, [(0, sorted(set(udp_src))), (2, sorted(set(udp_dst)))]),
        (IPPROTO_TCP, [(0, sorted(set(tcp_either))), (2, sorted(set(tcp_either)))]),
    ]
    # Symbolic program first: jumps name labels, resolved below.
    prog: list[tuple[int, str | int, str | int, int]] = [
        (_LDH_ABS, 0, 0, 12),
        (_JEQ, 0, "drop", ETH_P_IP),
        (_LDH_ABS, 0, 0, 20),
        (_JSET, "drop", 0, 0x3FFF),
        (_LDXB_MSH, 0, 0, 14),
        (_LDB_ABS, 0, 0, 23),
        (_JEQ, "udp", 0, IPPROTO_UDP),
        (_JEQ, "tcp", "drop", IPPROTO_TCP),
    ]
    labels: dict[str, int] = {}
    for proto, sides in groups:
        labels["udp" if proto == IPPROTO_UDP else "tcp"] = len(prog)
        for offset, ports in sides:
            if not ports:
                continue
            prog.append((_LDH_IND, 0, 0, 14 + offset))
            prog.extend((_JEQ, "accept", 0, port) for port in ports)
        prog.append((_RET, 0, 0, 0))
    labels["accept"] = len(prog)
    prog.append((_RET, 0, 0, 0xFFFF))
    labels["drop"] = len(prog)
    prog.append((_RET, 0, 0, 0))

    def target(at: int, jump: str | int) -> int:
        if isinstance(jump, int):
            return jump
        offset = labels[jump] - at - 1
        if not 0 <= offset <= 255:
            raise ValueError("too many ports for one BPF program")
        return offset

    return [(c, target(i, jt), target(i, jf), k) for i, (c, jt, jf, k) in enumerate(prog)]


@dataclass(frozen=True)
class SipMessage:
    ts: float
    src: int
    dst: int
    method: str | None  # a request's method; None for a response
    status: int | None  # a response's status; None for a request
    call_id: str
    cseq: int
    cseq_method: str
    from_user: str

    @property
    def is_invite(self) -> bool:
        return self.method == "INVITE"


_COMPACT = {"i": "call-id", "f": "from", "t": "to"}
_SIP_USER = re.compile(r"sips?:([^@;>]+)@")


def parse_sip(packet: Packet) -> SipMessage | None:
    """A SIP request or response in a UDP packet; None when it is not one (RTP, keep-alive)."""
    text = packet.payload.decode("latin-1")
    head, _, _ = text.partition("\r\n\r\n")
    lines = head.split("\r\n")
    first = lines[0].split(" ", 2)
    if len(first) < 2:
        return None
    method: str | None = None
    status: int | None = None
    if first[0] == "SIP/2.0":
        if not first[1].isdigit():
            return None
        status = int(first[1])
    elif len(first) == 3 and first[2] == "SIP/2.0" and first[0].isupper():
        method = first[0]
    else:
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            key = name.strip().lower()
            headers.setdefault(_COMPACT.get(key, key), value.strip())
    cseq_number, _, cseq_method = headers.get("cseq", "").partition(" ")
    user = _SIP_USER.search(headers.get("from", ""))
    return SipMessage(
        ts=packet.ts, src=packet.src, dst=packet.dst, method=method, status=status,
        call_id=headers.get("call-id", ""),
        cseq=int(cseq_number) if cseq_number.isdigit() else -1,
        cseq_method=cseq_method.strip(), from_user=user.group(1) if user else "",
    )  # fmt: skip


@dataclass(frozen=True)
class TelephoneEvent:
    """One RFC 4733 packet."""

    ts: float
    ssrc: int
    rtp_ts: int
    seq: int
    marker: bool
    event: int
    end: bool


def parse_telephone_event(
    packet: Packet, payload_type: int = TELEPHONE_EVENT_PT
) -> TelephoneEvent | None:
    data = packet.payload
    if len(data) < 12 or data[0] >> 6 != 2 or data[1] & 0x7F != payload_type:
        return None
    header = 12 + 4 * (data[0] & 0x0F)
    if len(data) < header + 4:
        return None
    seq, rtp_ts, ssrc = struct.unpack("!HII", data[2:12])
    return TelephoneEvent(
        ts=packet.ts, ssrc=ssrc, rtp_ts=rtp_ts, seq=seq, marker=bool(data[1] & 0x80),
        event=data[header], end=bool(data[header + 1] & 0x80),
    )  # fmt: skip


@dataclass(frozen=True)
class DtmfEvent:
    """One key press: the packets that share an SSRC and an RTP timestamp."""

    event: int
    rtp_ts: int
    first_ts: float  # the first of its packets on the wire
    first_marked: bool  # that first packet carried the marker bit (RFC 4733: it must)
    end_ts: float | None  # the first packet with the E bit
    packet_ts: tuple[float, ...]


def dtmf_events(packets: Sequence[TelephoneEvent]) -> list[DtmfEvent]:
    """Key presses in the order their first packet was seen."""
    grouped: dict[tuple[int, int], list[TelephoneEvent]] = {}
    for p in sorted(packets, key=lambda p: p.ts):
        grouped.setdefault((p.ssrc, p.rtp_ts), []).append(p)
    events = []
    for group in grouped.values():
        first = group[0]
        end = next((p.ts for p in group if p.end), None)
        events.append(
            DtmfEvent(first.event, first.rtp_ts, first.ts, first.marker, end,
                      tuple(p.ts for p in group))
        )  # fmt: skip
    return sorted(events, key=lambda e: e.first_ts)


def first_of_each_call(messages: Iterable[SipMessage]) -> list[SipMessage]:
    """Each Call-ID's first message (retransmissions dropped), in time order."""
    seen: set[str] = set()
    firsts = []
    for message in sorted(messages, key=lambda m: m.ts):
        if message.call_id not in seen:
            seen.add(message.call_id)
            firsts.append(message)
    return firsts


# -- the capture ---------------------------------------------------------------------------


class LoopbackCapture:
    """Packets on lo that pass a kernel BPF filter, with kernel receive timestamps. The
    thread only receives and keeps (timestamp, frame); parse with packets()."""

    def __init__(self, program: list[Insn]) -> None:
        self._program = program
        self._frames: list[tuple[float, bytes]] = []
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self.received = 0
        self.dropped = 0

    def start(self) -> None:
        try:
            # Protocol 0: it receives nothing until bound, after the filter is on.
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        except (PermissionError, AttributeError) as exc:
            raise CaptureError(f"no raw AF_PACKET socket here (root, Linux): {exc}") from exc
        code = b"".join(struct.pack("HBBI", *insn) for insn in self._program)
        buffer = ctypes.create_string_buffer(code)
        fprog = struct.pack("HL", len(self._program), ctypes.addressof(buffer))
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 * 1024 * 1024)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.bind(("lo", ETH_P_IP))  # Python puts the protocol in network order itself
        sock.settimeout(0.2)
        sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)  # reading resets the counters
        self._sock = sock
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        assert self._sock is not None
        receive, keep = self._sock.recvmsg, self._frames.append
        ancillary = socket.CMSG_SPACE(16)
        while not self._stop.is_set():
            try:
                frame, cmsgs, _flags, _addr = receive(65600, ancillary)
            except TimeoutError:
                continue
            except OSError:
                break
            for level, kind, data in cmsgs:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    seconds, nanos = struct.unpack("qq", data[:16])
                    keep((seconds + nanos / 1e9, frame))
                    break

    def write_pcap(self, path: Path) -> None:
        """What was kept, as a pcap file (nanosecond timestamps) for Wireshark."""
        with path.open("wb") as out:
            out.write(struct.pack("<IHHiIII", PCAP_NANOSECONDS, 2, 4, 0, 0, 65535,
                                  LINKTYPE_ETHERNET))  # fmt: skip
            for ts, frame in list(self._frames):
                seconds = int(ts)
                nanos = round((ts - seconds) * 1e9)
                out.write(struct.pack("<IIII", seconds, nanos, len(frame), len(frame)))
                out.write(frame)

    def packets(self) -> list[Packet]:
        frames = list(self._frames)
        return [p for p in (parse_frame(ts, frame) for ts, frame in frames) if p is not None]

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        if self._sock is not None:
            with contextlib.suppress(OSError):
                received, dropped = struct.unpack(
                    "II", self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
                )
                self.received += received
                self.dropped += dropped
            self._sock.close()
            self._sock = None


def sip_messages(packets: Iterable[Packet]) -> list[SipMessage]:
    return [m for p in packets if p.proto == IPPROTO_UDP and (m := parse_sip(p)) is not None]
