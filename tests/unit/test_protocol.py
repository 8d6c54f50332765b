"""The worker protocol: every message survives a round trip; anything else is a ProtocolError."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from pbx.protocol import (
    PROTOCOL_VERSION,
    Answer,
    Attach,
    Attached,
    Bridge,
    CommandResult,
    Detach,
    Dial,
    DtmfReceived,
    Hangup,
    HeldLeg,
    Hello,
    IncomingCall,
    LegAnswered,
    LegEnded,
    LegRinging,
    Play,
    PlaybackEnded,
    ProtocolError,
    Record,
    RecordingEnded,
    Reject,
    SendDtmf,
    Shutdown,
    StopPlay,
    StopRecord,
    Unbridge,
    decode_command,
    decode_event,
    encode,
)

COMMANDS = [
    Answer(cid=1, leg="w0-1"),
    Reject(cid=2, leg="w0-1", code=480, reason="Not now"),
    Reject(cid=3, leg="w0-1"),
    Hangup(cid=4, leg="w0-1"),
    Play(cid=5, leg="w0-1", path="/prompts/greeting.wav", loop=True, barge_in=False),
    StopPlay(cid=6, leg="w0-1"),
    Dial(
        cid=7,
        leg="w0-o1",
        parent="w0-1",
        uri="sip:1001@127.0.0.1:5060",
        from_uri="sip:+4930123@pbx",
        timeout_s=30,
        headers={"X-PBX-Call": "42"},
    ),
    Dial(cid=8, leg="w0-o2", uri="sip:1002@127.0.0.1"),
    Bridge(cid=9, a="w0-1", b="w0-o1"),
    Unbridge(cid=10, a="w0-1", b="w0-o1"),
    SendDtmf(cid=11, leg="w0-o1", digits="1027#*"),
    Record(cid=12, leg="w0-1", path="/voicemail/1.wav", max_seconds=120),
    StopRecord(cid=13, leg="w0-1"),
    Shutdown(cid=14),
    Detach(cid=15),
    Attach(cid=16),
]

EVENTS = [
    Hello(worker_id=3, max_legs=4, sip_port=5083, pid=4242),
    Attached(
        worker_id=3,
        max_legs=4,
        pid=4242,
        legs=[
            HeldLeg(
                leg="w3-1",
                direction="inbound",
                from_uri="<sip:4930@x>",
                to_uri="<sip:1@x>",
                sip_call_id="abc@host",
                peer="w3-oa1b2c3.7",
            ),
            HeldLeg(
                leg="w3-oa1b2c3.7",
                direction="outbound",
                from_uri="",
                to_uri="sip:1001@x",
                sip_call_id="def@host",
                peer="w3-1",
            ),
        ],
    ),
    CommandResult(cid=1, ok=True),
    CommandResult(cid=2, ok=False, error="no leg w0-9"),
    IncomingCall(
        leg="w0-1",
        from_uri='"Anna" <sip:+4930123@trunk>;tag=x',
        to_uri="<sip:4930555@pbx>",
        request_uri="sip:4930555@127.0.0.1:5080",
        sip_call_id="abc@host",
        headers={"X-PBX-Trunk": "provider"},
    ),
    LegRinging(leg="w0-o1"),
    LegAnswered(leg="w0-o1", sip_call_id="def@host"),
    LegEnded(leg="w0-o1", code=408, reason="Request Timeout"),
    DtmfReceived(leg="w0-1", digit="#"),
    PlaybackEnded(leg="w0-1", interrupted=True),
    RecordingEnded(leg="w0-1", path="/voicemail/1.wav", seconds=12.5),
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.type)
def test_every_command_survives_a_round_trip(command: object) -> None:
    line = encode(command)  # type: ignore[arg-type]
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line)["v"] == PROTOCOL_VERSION
    assert decode_command(line) == command
    assert decode_command(line.decode()) == command


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.type)
def test_every_event_survives_a_round_trip(event: object) -> None:
    line = encode(event)  # type: ignore[arg-type]
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert decode_event(line) == event


def test_a_newline_inside_a_value_stays_inside_its_line() -> None:
    event = LegEnded(leg="w0-1", code=500, reason="first\nsecond")
    line = encode(event)
    assert line.count(b"\n") == 1
    assert decode_event(line) == event


def test_commands_and_events_are_separate_sets() -> None:
    with pytest.raises(ProtocolError):
        decode_event(encode(Answer(cid=1, leg="w0-1")))
    with pytest.raises(ProtocolError):
        decode_command(encode(LegRinging(leg="w0-1")))


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"not json",
        b"\xff\xfe\x00",
        b"[]",
        b"42",
        b'{"v": 1}',
        b'{"v": 1, "type": "teleport", "cid": 1}',
        b'{"v": 2, "type": "answer", "cid": 1, "leg": "w0-1"}',
        b'{"type": "answer", "cid": 1, "leg": "w0-1"}',  # no version on the wire
        b'{"v": 1, "type": "answer", "leg": "w0-1"}',  # no cid
        b'{"v": 1, "type": "answer", "cid": "one", "leg": "w0-1"}',
        b'{"v": 1, "type": "answer", "cid": 1, "leg": "w0-1", "extra": true}',
        b'{"v": 1, "type": "reject", "cid": 1, "leg": "w0-1", "code": 200}',
        b'{"v": 1, "type": "send_dtmf", "cid": 1, "leg": "w0-1", "digits": "12x"}',
        b'{"v": 1, "type": "send_dtmf", "cid": 1, "leg": "w0-1", "digits": ""}',
        b'{"v": 1, "type": "dial", "cid": 1, "leg": "o", "uri": "sip:x", "timeout_s": 0}',
        b'{"v": 1, "type": "record", "cid": 1, "leg": "w0-1", "path": "/x.wav"}',
        b'{"v": 1, "type": "record", "cid": 1, "leg": "w0-1", "path": "/x.wav", "max_seconds": -1}',
    ],
)
def test_garbage_is_a_protocol_error(line: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_command(line)


def test_garbage_events_are_protocol_errors() -> None:
    with pytest.raises(ProtocolError, match="not an event"):
        decode_event(b'{"v": 1, "type": "leg_ended", "leg": "w0-1", "code": "busy"}')


def test_messages_are_immutable() -> None:
    message = Answer(cid=1, leg="w0-1")
    with pytest.raises(ValidationError):
        message.leg = "w0-2"  # type: ignore[misc]
