"""The wire-latency benchmark's own parsing and matching (bench.wire, bench.latency): frames,
the kernel filter program, SIP and RFC 4733 packets, pairing starts with INVITEs, the queue
as seen on the wire, and percentiles. Pure: no sockets, no clock."""

from __future__ import annotations

import struct
from pathlib import Path

from bench.latency import (
    FreeSample,
    QueueCaller,
    bye_samples,
    digit_sample,
    http_first_segment,
    mark_queue_state,
    queue_callers,
    summarize,
    waiting_at,
)
from bench.wire import (
    IPPROTO_TCP,
    IPPROTO_UDP,
    Insn,
    Packet,
    SipMessage,
    TelephoneEvent,
    compile_port_filter,
    dtmf_events,
    first_of_each_call,
    parse_frame,
    parse_sip,
    parse_telephone_event,
)
from tests.support.dtmf_pcap import write_dtmf_pcap

PHONE, EDGE, WORKER, CALLER = 40001, 40002, 5080, 40003


def frame(proto: int, src: int, dst: int, payload: bytes, *, fragment: int = 0,
          ethertype: int = 0x0800) -> bytes:  # fmt: skip
    """Ethernet + IPv4 + UDP/TCP as on lo (zero MACs, no checksums needed)."""
    if proto == IPPROTO_UDP:
        l4 = struct.pack("!HHHH", src, dst, 8 + len(payload), 0) + payload
    else:  # TCP, 20-byte header
        l4 = struct.pack("!HHIIBBHHH", src, dst, 1, 1, 5 << 4, 0x18, 65535, 0, 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0, fragment, 64, proto, 0,
                     b"\x7f\0\0\x01", b"\x7f\0\0\x01")  # fmt: skip
    return b"\0" * 12 + struct.pack("!H", ethertype) + ip + l4


def run_bpf(program: list[Insn], packet: bytes) -> int:
    """The few classic BPF instructions compile_port_filter emits, interpreted."""
    a = x = pc = 0
    while True:
        code, jt, jf, k = program[pc]
        pc += 1
        if code == 0x28:  # ldh [k]
            a = struct.unpack("!H", packet[k : k + 2])[0]
        elif code == 0x30:  # ldb [k]
            a = packet[k]
        elif code == 0x48:  # ldh [x + k]
            a = struct.unpack("!H", packet[x + k : x + k + 2])[0]
        elif code == 0xB1:  # ldxb 4 * ([k] & 0xf)
            x = 4 * (packet[k] & 0x0F)
        elif code == 0x15:  # jeq #k
            pc += jt if a == k else jf
        elif code == 0x45:  # jset #k
            pc += jt if a & k else jf
        elif code == 0x06:  # ret #k
            return k
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")


def sip(
    ts: float, src: int, dst: int, *, method: str | None = None, status: int | None = None,
    call_id: str = "c1", cseq: str = "1 INVITE", from_user: str = "491",
) -> SipMessage:  # fmt: skip
    number, _, cseq_method = cseq.partition(" ")
    return SipMessage(ts, src, dst, method, status, call_id, int(number), cseq_method, from_user)


# -- frames and the kernel filter -----------------------------------------------------------


def test_frames_parse_to_ports_and_payload() -> None:
    udp = parse_frame(1.5, frame(IPPROTO_UDP, 5060, 40000, b"INVITE"))
    assert udp == Packet(1.5, IPPROTO_UDP, 5060, 40000, b"INVITE")
    tcp = parse_frame(2.0, frame(IPPROTO_TCP, 8080, 50000, b"HTTP/1.1 200 OK\r\n"))
    assert tcp == Packet(2.0, IPPROTO_TCP, 8080, 50000, b"HTTP/1.1 200 OK\r\n")
    assert parse_frame(0, frame(IPPROTO_UDP, 1, 2, b"x", fragment=0x2000)) is None  # MF set
    assert parse_frame(0, frame(IPPROTO_UDP, 1, 2, b"x", ethertype=0x0806)) is None  # ARP
    assert parse_frame(0, b"\0" * 20) is None


def test_filter_keeps_only_the_ports_asked_for() -> None:
    program = compile_port_filter(udp_src=[20000], udp_dst=[PHONE, EDGE], tcp_either=[8080])

    def kept(packet: bytes) -> bool:
        return run_bpf(program, packet) > 0

    assert kept(frame(IPPROTO_UDP, 20000, 30000, b"rtp"))  # from the caller's media port
    assert kept(frame(IPPROTO_UDP, 5060, PHONE, b"INVITE"))
    assert kept(frame(IPPROTO_UDP, WORKER, EDGE, b"INVITE"))
    assert not kept(frame(IPPROTO_UDP, PHONE, 30000, b"to elsewhere"))  # phone is dst-only
    assert not kept(frame(IPPROTO_UDP, 30000, 20000, b"rtp back"))  # media port is src-only
    assert kept(frame(IPPROTO_TCP, 8080, 50000, b"HTTP"))
    assert kept(frame(IPPROTO_TCP, 50000, 8080, b"PUT"))
    assert not kept(frame(IPPROTO_TCP, 6379, 50000, b"redis"))
    assert not kept(frame(IPPROTO_TCP, 20000, 30000, b"tcp on a UDP port"))
    assert not kept(frame(IPPROTO_UDP, 20000, 30000, b"x", fragment=0x2000))
    assert not kept(frame(IPPROTO_UDP, 20000, 30000, b"x", ethertype=0x86DD))
    # Without TCP ports every TCP packet is dropped; the whole frame is kept when accepted.
    only_udp = compile_port_filter(udp_dst=[PHONE])
    assert run_bpf(only_udp, frame(IPPROTO_TCP, 8080, PHONE, b"")) == 0
    assert run_bpf(only_udp, frame(IPPROTO_UDP, 1, PHONE, b"")) == 0xFFFF


# -- SIP and RFC 4733 -----------------------------------------------------------------------


def test_sip_requests_and_responses_parse_with_compact_headers() -> None:
    invite = (
        b"INVITE sip:2001@127.0.0.1:40001 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1\r\n"
        b'f: "Caller" <sip:4930999@127.0.0.1>;tag=a\r\nt: <sip:2001@127.0.0.1>\r\n'
        b"i: abc@host\r\nCSeq: 102 INVITE\r\n\r\nv=0\r\n"
    )
    message = parse_sip(Packet(3.0, IPPROTO_UDP, EDGE, PHONE, invite))
    assert message == SipMessage(3.0, EDGE, PHONE, "INVITE", None, "abc@host", 102, "INVITE",
                                 "4930999")  # fmt: skip
    ok = b"SIP/2.0 200 OK\r\nCall-ID: x\r\nCSeq: 2 BYE\r\nFrom: <sip:2001@h>;tag=b\r\n\r\n"
    reply = parse_sip(Packet(4.0, IPPROTO_UDP, EDGE, PHONE, ok))
    assert reply is not None
    assert (reply.method, reply.status, reply.cseq_method, reply.from_user) == (
        None, 200, "BYE", "2001",
    )  # fmt: skip
    rtp = struct.pack("!BBHII", 0x80, 0, 1, 2, 3) + b"\xff" * 160
    assert parse_sip(Packet(0, IPPROTO_UDP, 1, 2, rtp)) is None
    assert parse_sip(Packet(0, IPPROTO_UDP, 1, 2, b"\r\n\r\n")) is None  # a keep-alive


def _dtmf_stream(tmp_path: Path, digits: str, start: float) -> list[TelephoneEvent]:
    """The stream the benchmark plays, read back from its pcap, shifted to `start`."""
    path = tmp_path / "dtmf.pcap"
    write_dtmf_pcap(digits, path)
    data, offset, events = path.read_bytes(), 24, []
    while offset < len(data):
        seconds, micros, length, _ = struct.unpack("<IIII", data[offset : offset + 16])
        packet = parse_frame(seconds + micros / 1e6 - 1_700_000_000 + start,
                             data[offset + 16 : offset + 16 + length])  # fmt: skip
        offset += 16 + length
        assert packet is not None
        event = parse_telephone_event(packet)
        if event is not None:
            events.append(event)
    return events


def test_key_presses_group_by_rtp_timestamp_even_for_the_same_digit(tmp_path: Path) -> None:
    presses = dtmf_events(_dtmf_stream(tmp_path, "1001", start=10.0))
    assert [p.event for p in presses] == [1, 0, 0, 1]
    assert all(p.first_marked for p in presses)
    # lead-in 0.3 s; a press: 8 updates 20 ms apart, the end twice more 5 ms apart, 240 ms gap
    assert [round(p.first_ts - 10.0, 3) for p in presses] == [0.3, 0.69, 1.08, 1.47]
    assert [round((p.end_ts or 0) - p.first_ts, 3) for p in presses] == [0.14] * 4
    assert len({p.rtp_ts for p in presses}) == 4
    assert all(len(p.packet_ts) == 10 for p in presses)  # 8 updates, the end sent 3 times


def test_digit_latency_runs_from_the_deciding_press_to_the_callers_invite(
    tmp_path: Path,
) -> None:
    events = _dtmf_stream(tmp_path, "1001", start=100.0)  # the 4th press at 101.47
    at_edge = [
        sip(100.0, CALLER, EDGE, method="INVITE", call_id="caller", from_user="491"),
        sip(101.4742, WORKER, EDGE, method="INVITE", call_id="dial", from_user="491"),
    ]
    at_phone = [
        sip(101.4, EDGE, PHONE, method="INVITE", call_id="other", from_user="492"),
        sip(101.4750, EDGE, PHONE, method="INVITE", call_id="dial", from_user="491"),
        sip(102.0, EDGE, PHONE, method="INVITE", call_id="dial", from_user="491"),  # retrans.
    ]
    sample = digit_sample("491", "1001", events, at_phone, at_edge)
    assert not isinstance(sample, str)
    assert round(sample.total_ms, 3) == 5.0
    assert round(sample.to_edge_ms or 0, 3) == 4.2
    assert round(sample.edge_to_phone_ms or 0, 3) == 0.8
    assert round(sample.from_end_ms or 0, 3) == -135.0  # the INVITE before the key's end
    assert sample.packets_before_edge == 1 and sample.marked
    assert digit_sample("491", "1001", events[:-10], at_phone, at_edge) == (
        "3 key presses on the wire for 4 digits"
    )
    assert digit_sample("491", "1000", events, at_phone, at_edge) == (
        "key press 4 is event 1, not '0'"
    )
    assert digit_sample("493", "1001", events, at_phone, at_edge) == "no INVITE at the phone"


def test_first_of_each_call_drops_retransmissions() -> None:
    messages = [sip(2.0, EDGE, PHONE, call_id="a"), sip(1.0, EDGE, PHONE, call_id="b"),
                sip(1.5, EDGE, PHONE, call_id="a")]  # fmt: skip
    assert [(m.call_id, m.ts) for m in first_of_each_call(messages)] == [("b", 1.0), ("a", 1.5)]


# -- agent free -----------------------------------------------------------------------------


def _agent_call(call: str, invite_at: float, caller: str, bye_at: float) -> list[SipMessage]:
    """An agent's call as the phone's port sees it: INVITE in, its BYE out, 200 OK in."""
    return [
        sip(invite_at - 0.001, WORKER, EDGE, method="INVITE", call_id=call, from_user=caller),
        sip(invite_at, EDGE, PHONE, method="INVITE", call_id=call, from_user=caller),
        sip(bye_at, PHONE, EDGE, method="BYE", call_id=call, cseq="1 BYE"),
        sip(bye_at + 0.5, PHONE, EDGE, method="BYE", call_id=call, cseq="1 BYE"),  # retrans.
        sip(bye_at + 0.001, EDGE, PHONE, status=200, call_id=call, cseq="1 BYE"),
    ]


def test_agent_free_pairs_each_byes_200_with_the_next_new_invite() -> None:
    messages = [*_agent_call("a", 1.0, "491", 2.0), *_agent_call("b", 2.021, "492", 3.0),
                *_agent_call("c", 3.0005, "493", 4.0)]  # fmt: skip
    at_edge = [m for m in messages if m.dst == EDGE]
    samples = bye_samples([PHONE], messages, at_edge)
    # b: 20 ms after the 200 OK; c overtook b's 200 OK: negative, not skipped; after the
    # last BYE nothing came
    assert [(s.caller, round(s.total_ms, 3)) for s in samples] == [("492", 20.0),
                                                                   ("493", -0.5)]  # fmt: skip
    assert round(samples[0].to_edge_ms or 0, 3) == 19.0
    assert round(samples[0].edge_to_phone_ms or 0, 3) == 1.0


def test_the_queue_on_the_wire_is_answered_callers_not_yet_offered_or_gone() -> None:
    messages = [
        sip(1.0, EDGE, CALLER, status=200, call_id="x1", from_user="491"),
        sip(1.1, EDGE, CALLER, status=200, call_id="x2", from_user="492"),
        sip(1.2, EDGE, CALLER, status=200, call_id="x3", from_user="493"),
        sip(1.9, EDGE, CALLER, status=200, call_id="x4", from_user="494"),  # in the greeting
        sip(1.3, EDGE, CALLER, status=200, call_id="x3", from_user="493"),  # retransmission
        sip(1.5, EDGE, CALLER, method="BYE", call_id="x2", cseq="2 BYE"),  # hung up
        sip(0.5, EDGE, CALLER, status=200, call_id="x0", cseq="1 OPTIONS", from_user="490"),
    ]
    callers = queue_callers(CALLER, messages)
    assert sorted(callers, key=lambda c: c.number) == [
        QueueCaller("491", 1.0, None), QueueCaller("492", 1.1, 1.5),
        QueueCaller("493", 1.2, None), QueueCaller("494", 1.9, None),
    ]  # fmt: skip
    offers = [sip(1.8, EDGE, PHONE, method="INVITE", from_user="491")]
    assert [c.number for c in waiting_at(2.0, callers, offers, 0.3)] == ["493"]
    assert [c.number for c in waiting_at(2.3, callers, offers, 0.3)] == ["493", "494"]
    assert [c.number for c in waiting_at(1.45, callers, offers, 0.3)] == ["491", "492"]

    samples = [FreeSample(PHONE, 2.3, 10.0, None, None, "493"),
               FreeSample(PHONE, 2.3, 10.0, None, None, "494")]  # fmt: skip
    mark_queue_state(samples, callers, offers, 0.3)
    assert [(s.waiting, s.oldest) for s in samples] == [(2, True), (2, False)]


def test_http_segments_are_found_after_our_connection_began() -> None:
    packets = [
        Packet(1.0, IPPROTO_TCP, 8080, 50000, b"HTTP/1.1 200 OK"),  # an earlier connection
        Packet(5.0, IPPROTO_TCP, 8080, 50000, b""),  # an ACK carries no data
        Packet(5.2, IPPROTO_TCP, 8080, 50000, b"HTTP/1.1 200 OK"),
        Packet(5.3, IPPROTO_TCP, 8080, 50000, b"{...}"),
        Packet(5.2, IPPROTO_UDP, 8080, 50000, b"not TCP"),
    ]
    assert http_first_segment(packets, 8080, 50000, after=4.0) == 5.2
    assert http_first_segment(packets, 8080, 50000) == 1.0
    assert http_first_segment(packets, 50000, 8080) is None


def test_percentiles_are_nearest_rank_and_skip_missing_values() -> None:
    summary = summarize([float(v) for v in range(100, 0, -1)] + [None])
    assert (summary.count, summary.p50, summary.p99, summary.max, summary.min) == (
        100, 50.0, 99.0, 100.0, 1.0,
    )  # fmt: skip
    assert summarize([7.0]).p99 == 7.0
    few = summarize([1.0, 2.0, 3.0])
    assert (few.p50, few.p99) == (2.0, 3.0)  # below 100 samples p99 is the maximum
    assert summarize([]).count == 0 and summarize([]).p50 is None
