"""What a phone may transfer its caller to (flows.transfer), and how a REFER is read
(pbx.refer_hook): pure, table-tested."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.settings import FeatureCodeSettings
from flows.transfer import Refusal, Transfer, TransferKind, feed_feature_digit, judge_transfer
from pbx.refer_hook import parse_refer, split_refer_to

EXTENSIONS = frozenset({"1001", "1002", "700"})


@pytest.mark.parametrize(
    ("target", "outbound_route", "verdict"),
    [
        ("1002", True, Transfer("1001", 5, "1002")),
        ("700", False, Transfer("1001", 5, "700")),  # a queue's or a menu's extension
        ("+4930123456", True, Transfer("1001", 5, "+4930123456", external=True)),
        ("030123456;99", True, Transfer("1001", 5, "030123456", external=True, post_dial="99")),
        ("+4930123456", False, Refusal(403, "No outbound route")),
        ("1001", True, Refusal(403, "Own extension")),
        ("1003", True, Refusal(404, "Not Found")),
        ("alice", True, Refusal(484, "Address Incomplete")),
        ("", True, Refusal(484, "Address Incomplete")),
    ],
)
def test_a_phone_may_transfer_to_what_it_may_dial(
    target: str, outbound_route: bool, verdict: Transfer | Refusal
) -> None:
    assert judge_transfer(target, by_extension="1001", by_user_id=5, extensions=EXTENSIONS,
                          outbound_route=outbound_route) == verdict  # fmt: skip


@pytest.mark.parametrize(
    ("refer_to", "uri", "replaces"),
    [
        ("<sip:1002@pbx.example>", "sip:1002@pbx.example", None),
        ("sip:1002@pbx.example", "sip:1002@pbx.example", None),
        ("sip:1002@pbx.example;param=1", "sip:1002@pbx.example", None),
        (
            "<sip:1002@pbx?Replaces=abc%40h%3Bto-tag%3D1%3Bfrom-tag%3D2&Require=replaces>",
            "sip:1002@pbx",
            "abc@h;to-tag=1;from-tag=2",
        ),
        ("<sip:1002@pbx?replaces=x%40y>", "sip:1002@pbx", "x@y"),
    ],
)
def test_the_refer_to_gives_the_target_and_an_attended_transfers_dialog(
    refer_to: str, uri: str, replaces: str | None
) -> None:
    assert split_refer_to(refer_to) == (uri, replaces)


def test_a_refer_is_read_from_its_text_and_one_lacking_a_part_is_left_alone() -> None:
    text = (
        "REFER sip:worker@127.0.0.1:5062 SIP/2.0\r\n"
        "Call-ID: abc@phone\r\nCSeq: 31 REFER\r\n"
        "r: <sip:1002@pbx>\r\nReferred-By: <sip:1001@pbx>\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    request = parse_refer(text)
    assert request is not None
    assert (request.sip_call_id, request.cseq, request.target, request.referred_by) == (
        "abc@phone", 31, "sip:1002@pbx", "<sip:1001@pbx>",
    )  # fmt: skip
    assert parse_refer(text.replace("r: <sip:1002@pbx>\r\n", "")) is None
    assert parse_refer(text.replace("CSeq: 31", "CSeq: x")) is None
    assert parse_refer("INVITE " + text[6:]) is None


CODES = {"#1": TransferKind.BLIND, "*2": TransferKind.ATTENDED}


@pytest.mark.parametrize(
    ("typed", "digit", "after"),
    [
        ("", "#", ("#", None)),
        ("#", "1", ("", TransferKind.BLIND)),
        ("", "*", ("*", None)),
        ("*", "2", ("", TransferKind.ATTENDED)),
        ("", "5", ("", None)),  # no code begins so
        ("#", "5", ("", None)),
        ("#", "*", ("*", None)),  # cannot go on, may begin afresh
        ("*", "#", ("#", None)),
    ],
)
def test_in_call_codes_are_told_apart_digit_by_digit(
    typed: str, digit: str, after: tuple[str, TransferKind | None]
) -> None:
    assert feed_feature_digit(typed, digit, CODES) == after


def test_in_call_codes_that_begin_alike_are_refused() -> None:
    with pytest.raises(ValidationError, match="must not begin alike"):
        FeatureCodeSettings(blind_transfer="*2", attended_transfer="*21")
    with pytest.raises(ValidationError):
        FeatureCodeSettings(blind_transfer="12")  # would fire on an ordinary number
    with pytest.raises(ValidationError, match="supervise code"):
        FeatureCodeSettings(supervise="*5")  # *50 (ready) would read as "supervise 0"
