"""RFC 4733 telephone-event streams as pcap files for SIPp's play_pcap_audio.

One stream per digit string, with increasing sequence numbers and timestamps and one SSRC:
chaining the stock per-digit pcaps repeats identical packets, so a correct receiver drops
the second "0" of 1001 as a retransmission (see shared/notes/pjsua2.md).
"""

from __future__ import annotations

import struct
from pathlib import Path

EVENT_CODES = {**{str(d): d for d in range(10)}, "*": 10, "#": 11}
PACKET_MS = 20
SAMPLES_PER_MS = 8  # 8 kHz clock
LOOPBACK = bytes([127, 0, 0, 1])
PCMU_SILENCE = b"\xff" * (PACKET_MS * SAMPLES_PER_MS)


def write_dtmf_pcap(
    digits: str,
    path: Path,
    *,
    payload_type: int = 101,
    tone_ms: int = 160,
    gap_ms: int = 240,
    lead_in_ms: int = 300,
) -> float:
    """Write the stream for `digits`; returns its duration in seconds.

    It opens with `lead_in_ms` of PCMU silence on the same SSRC, as a phone sends audio
    before anyone presses a key: a receiver validates a new RTP source over its first
    packets (PJMEDIA's probation) and would otherwise drop the first digit.
    """
    packets: list[tuple[float, bytes]] = []
    seq, timestamp, at = 1000, 160_000, 0.0
    ssrc = 0x5A1DD7F0
    for _ in range(lead_in_ms // PACKET_MS):
        header = struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, timestamp, ssrc)
        packets.append((at, udp_frame(header + PCMU_SILENCE)))
        seq += 1
        timestamp += PACKET_MS * SAMPLES_PER_MS
        at += PACKET_MS / 1000
    per_tone = max(1, tone_ms // PACKET_MS)
    for digit in digits:
        event = EVENT_CODES[digit]
        # per_tone updates, the last one marked "end" and sent three times (RFC 4733 2.5.1.4).
        for i in range(per_tone + 2):
            end = i >= per_tone - 1
            duration = min(i + 1, per_tone) * PACKET_MS * SAMPLES_PER_MS
            body = struct.pack("!BBH", event, (0x80 if end else 0) | 10, duration)
            marker = 0x80 if i == 0 else 0
            header = struct.pack(
                "!BBHII", 0x80, marker | payload_type, seq & 0xFFFF, timestamp, ssrc
            )
            packets.append((at, udp_frame(header + body)))
            seq += 1
            if i < per_tone - 1:
                at += PACKET_MS / 1000
            elif i < per_tone + 1:
                at += 0.005
        timestamp += (tone_ms + gap_ms) * SAMPLES_PER_MS
        at += gap_ms / 1000
    with path.open("wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))  # Ethernet
        for offset, frame in packets:
            seconds = 1_700_000_000 + offset
            micros = round((seconds % 1) * 1_000_000) % 1_000_000
            out.write(struct.pack("<IIII", int(seconds), micros, len(frame), len(frame)))
            out.write(frame)
    return at


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def udp_frame(payload: bytes) -> bytes:
    """Ethernet/IPv4/UDP around an RTP packet; SIPp rewrites addresses and ports."""
    length = 8 + len(payload)
    pseudo = LOOPBACK + LOOPBACK + struct.pack("!BBH", 0, 17, length)
    udp = struct.pack("!HHHH", 10000, 10000, length, 0) + payload
    udp = udp[:6] + struct.pack("!H", _checksum(pseudo + udp) or 0xFFFF) + udp[8:]
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + length, 0, 0x4000, 64, 17, 0, LOOPBACK, LOOPBACK
    )
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    return b"\0" * 12 + b"\x08\x00" + ip + udp
