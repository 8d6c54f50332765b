"""The kernel filter for unheard speech, run by the real kernel on loopback sockets."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import pytest

from pbx.unheard_speech import attach, detach, speech_drop_program, udp_socket_on

PCMA, TELEPHONE_EVENT = 8, 101


def rtp(payload_type: int, seq: int, *, marker: bool = False, size: int = 160) -> bytes:
    return struct.pack(">BBHII", 0x80, payload_type | (0x80 if marker else 0), seq, 0, 1) + bytes(
        size
    )


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.setblocking(False)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    yield receiver, sender
    receiver.close()
    sender.close()


def exchange(
    pair: tuple[socket.socket, socket.socket], packets: list[bytes]
) -> list[tuple[int, int]]:
    """Send the packets, then read what got through: (payload type byte, seq) each."""
    receiver, sender = pair
    for packet in packets:
        sender.sendto(packet, receiver.getsockname())
    # A marker packet that always passes: once it is read, everything before it was decided
    # (loopback delivers in order, inside sendto).
    sender.sendto(rtp(TELEPHONE_EVENT, 65535, size=4), receiver.getsockname())
    got: list[tuple[int, int]] = []
    while True:
        data = receiver.recv(2048)
        if struct.unpack(">H", data[2:4])[0] == 65535 and data[1] == TELEPHONE_EVENT:
            return got
        got.append((data[1], struct.unpack(">H", data[2:4])[0]))


@pytest.mark.parametrize(
    ("packets", "passed"),
    [
        # Speech: one in 32 by sequence number passes (and so wraps at 65536).
        ([rtp(PCMA, seq) for seq in range(64)], [(PCMA, 0), (PCMA, 32)]),
        ([rtp(PCMA, seq) for seq in range(65530, 65535)], []),
        # The marker bit does not hide speech.
        ([rtp(PCMA, 1, marker=True), rtp(PCMA, 32, marker=True)], [(PCMA | 0x80, 32)]),
        # Digits, comfort noise and another codec pass, whatever their sequence number.
        ([rtp(TELEPHONE_EVENT, 7, size=4), rtp(13, 9, size=1), rtp(0, 3)],
         [(TELEPHONE_EVENT, 7), (13, 9), (0, 3)]),
        ([rtp(TELEPHONE_EVENT, 8, marker=True, size=4)], [(TELEPHONE_EVENT | 0x80, 8)]),
    ],
)  # fmt: skip
def test_only_the_speech_payload_type_is_thinned(
    pair: tuple[socket.socket, socket.socket], packets: list[bytes], passed: list[tuple[int, int]]
) -> None:
    attach(pair[0], speech_drop_program(PCMA))
    assert exchange(pair, packets) == passed


def test_detach_lets_everything_through_again_and_is_harmless_twice(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    attach(pair[0], speech_drop_program(PCMA))
    assert exchange(pair, [rtp(PCMA, 1)]) == []
    detach(pair[0])
    detach(pair[0])
    assert exchange(pair, [rtp(PCMA, 1)]) == [(PCMA, 1)]


def test_a_new_program_replaces_the_old(pair: tuple[socket.socket, socket.socket]) -> None:
    attach(pair[0], speech_drop_program(PCMA))
    attach(pair[0], speech_drop_program(0))
    assert exchange(pair, [rtp(PCMA, 1), rtp(0, 1)]) == [(PCMA, 1)]


def test_the_socket_is_found_by_its_address_and_the_filter_reaches_the_original(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    host, port = pair[0].getsockname()
    found = udp_socket_on(port, host)
    assert found is not None and found.fileno() != pair[0].fileno()
    with found:
        attach(found, speech_drop_program(PCMA))
    assert exchange(pair, [rtp(PCMA, 1), rtp(PCMA, 64)]) == [(PCMA, 64)]
    assert udp_socket_on(port, "127.0.0.2") is None


@pytest.mark.parametrize(("payload_type", "keep"), [(128, 32), (-1, 32), (8, 0), (8, 24)])
def test_impossible_programs_are_refused(payload_type: int, keep: int) -> None:
    with pytest.raises(ValueError):
        speech_drop_program(payload_type, keep)
