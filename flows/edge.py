"""Where a call flow reaches people: agents' phones through the Kamailio edge, customers
through the provider's trunk (with the edge as a loose router), and which of several rung
phones answered."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import structlog

from acd.decisions import AgentTarget
from acd.ring_group import answering_agent
from core.context import EdgeUnavailable, PhoneContacts
from pbx.legs import Leg
from pbx.protocol import RING_HEADER

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Edge:
    """Where agents' phones are reached (Kamailio) and the SIP domain callers appear from."""

    host: str
    port: int
    domain: str

    def uri_of(self, user: str, *, domain: bool = False) -> str:
        """An extension's URI at the edge, or (`domain`) a caller's address in our domain."""
        return f"sip:{user}@{self.domain}" if domain else f"sip:{user}@{self.host}:{self.port}"

    @property
    def route(self) -> str:
        """The edge as a loose router: calls to the provider pass it (pbx.protocol.Dial)."""
        return f"sip:{self.host}:{self.port};lr"


def ring_headers(queue_name: str, agents: tuple[AgentTarget, ...]) -> dict[str, str]:
    """What an offer's INVITE carries: the queue's name (the phone shows it) and, for
    ring_all, the other agents' extensions the edge forks it to."""
    headers = {"X-PBX-Queue": queue_name}
    if len(agents) > 1:
        headers[RING_HEADER] = ",".join(a.extension for a in agents[1:])
    return headers


async def answering_agent_of(
    registrations: PhoneContacts, agents: tuple[AgentTarget, ...], agent_leg: Leg
) -> AgentTarget | None:
    """Whose phone answered a leg rung on several; None (logged) if it cannot be told, so
    that nobody is marked in a call that is someone else's."""

    async def contacts(extension: str) -> list[str]:
        # None when the edge does not answer: the extension in the Contact may still tell.
        with contextlib.suppress(EdgeUnavailable):
            return await registrations.registered_contacts(extension)
        return []

    registered: dict[int, list[str]] = {}
    if len(agents) > 1:
        # Asked once a phone has answered, all at once: the caller hears nothing until then.
        found = await asyncio.gather(*(contacts(a.extension) for a in agents))
        registered = {a.user_id: each for a, each in zip(agents, found, strict=True)}
    winner = answering_agent(agent_leg.answered_contact, agents, registered)
    if winner is None:
        log.error("ring_all_answer_unidentified", contact=agent_leg.answered_contact,
                  user_ids=[a.user_id for a in agents])  # fmt: skip
    return winner


def number_uri(trunk_uri: str, number: str) -> str:
    """sip:provider.example.com:5060 -> sip:+4930123@provider.example.com:5060."""
    host = trunk_uri.removeprefix("sip:").rpartition("@")[2]
    return f"sip:{number}@{host}"
