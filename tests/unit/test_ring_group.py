"""Telling which agent's phone took a call rung on several at once."""

from __future__ import annotations

import pytest

from acd.decisions import AgentTarget
from acd.ring_group import answering_agent, sip_address

ANNA = AgentTarget(1, "1001", None)
BEN = AgentTarget(2, "1002", None)
CAROL = AgentTarget(3, "1003", None)
REGISTERED = {
    1: ["sip:1001@127.0.0.1:5062;ob"],
    2: ["sip:ben-desk@10.0.0.7:5060", "sip:1002@10.0.0.8:5060"],  # two phones
    3: ["<sip:x7f3@10.0.0.9:5070;transport=udp>"],  # a softphone with its own user part
}


@pytest.mark.parametrize(
    ("uri", "address"),
    [
        ("sip:1001@127.0.0.1:5062;ob", "1001@127.0.0.1:5062"),
        ('"Anna" <sip:1001@127.0.0.1:5062;ob>;expires=60', "1001@127.0.0.1:5062"),
        ("<sips:1001@host>", "1001@host"),
        ("sip:10.0.0.1:5060", "10.0.0.1:5060"),
    ],
)
def test_sip_address_drops_everything_but_user_host_and_port(uri: str, address: str) -> None:
    assert sip_address(uri) == address


@pytest.mark.parametrize(
    ("contact", "winner"),
    [
        ("<sip:1001@127.0.0.1:5062;ob>", ANNA),  # the registered Contact
        ("sip:ben-desk@10.0.0.7:5060", BEN),  # either of Ben's phones
        ("sip:1002@10.0.0.8:5060;transport=udp", BEN),
        ("<sip:x7f3@10.0.0.9:5070>", CAROL),  # user part no extension: registration says
        ("sip:1003@192.168.1.50:5060", CAROL),  # unknown Contact: the extension says
        ("sip:nobody@192.168.1.50:5060", None),  # neither: cannot tell
        (None, None),
    ],
)
def test_the_answering_phone_names_its_agent(contact: str | None, winner: AgentTarget) -> None:
    assert answering_agent(contact, [ANNA, BEN, CAROL], REGISTERED) == winner


def test_a_single_agent_needs_no_telling() -> None:
    assert answering_agent(None, [BEN], {}) == BEN
