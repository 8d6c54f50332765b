"""Which agent took a queue call rung on several phones at once.

ring_all rings every offered agent with one worker leg: the edge forks the INVITE to each
phone and CANCELs the others when one answers. The answer carries the phone's Contact, which
is the Contact it registered (RFC 3261 10.2.1: where it wants requests sent); that tells the
agents apart, with the extension in the Contact's user part as a fallback.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from acd.decisions import AgentTarget


def sip_address(uri: str) -> str:
    """user@host:port of a SIP URI or Contact value: no display name, brackets, scheme or
    parameters. `"A" <sip:1001@10.0.0.5:5062;ob>` -> `1001@10.0.0.5:5062`."""
    inner = uri.split("<", 1)[1].split(">", 1)[0] if "<" in uri else uri
    inner = inner.strip().split(";", 1)[0]
    return inner.split(":", 1)[1] if inner.lower().startswith(("sip:", "sips:")) else inner


def answering_agent(
    contact: str | None,
    agents: Sequence[AgentTarget],
    registered: Mapping[int, Sequence[str]],
) -> AgentTarget | None:
    """The agent whose phone answered with `contact` (None if it cannot be told).

    `registered`: each agent's registered Contacts, as the edge holds them."""
    if len(agents) == 1:
        return agents[0]
    if not contact:
        return None
    address = sip_address(contact)
    by_registration = [
        agent
        for agent in agents
        if any(sip_address(each) == address for each in registered.get(agent.user_id, ()))
    ]
    if len(by_registration) == 1:
        return by_registration[0]
    user = address.split("@", 1)[0] if "@" in address else ""
    by_extension = [agent for agent in agents if agent.extension == user]
    return by_extension[0] if len(by_extension) == 1 else None
