"""Registration at the SIP provider: the `uacreg` row Kamailio's uac module registers from,
written from the settings, and the state Kamailio reports for it.

Kamailio registers, not a media worker: the Contact the provider learns must be the edge.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Protocol

import structlog
from sqlalchemy import Integer, String, UniqueConstraint, delete
from sqlalchemy.orm import Mapped, mapped_column

from core.context import EdgeUnavailable
from core.db import Base, create_engine, create_session_factory
from core.settings import Settings, TrunkSettings

log = structlog.get_logger(__name__)

# uacreg.l_uuid of the trunk's registration, and the user part of the Contact it registers:
# a provider sends calls to sip:trunk@<edge>.
REGISTRATION_ID = "trunk"
# uac renews a registration once it lapses within one timer tick plus 3 s; a tick of a tenth
# of its lifetime renews it about 10 % early (and retries a failed one that often).
MIN_RENEWAL_TICK_S = 5
RETRY_AFTER_FAILURE_S = 60
# At stop: time for the un-REGISTER, the provider's challenge and its answer (two round trips).
UNREGISTER_LINGER_S = 1.5
# uac.reg_info flags (Kamailio uac module documentation, "uac.reg_info").
_FLAG_ONGOING = 2
_FLAG_ONLINE = 4


class UacRegistration(Base):
    """Kamailio's `uacreg` table (schema version 5); the service rewrites it at every start."""

    __tablename__ = "uacreg"
    __table_args__ = (UniqueConstraint("l_uuid", name="uacreg_l_uuid_idx"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    l_uuid: Mapped[str] = mapped_column(String(64), default="")
    l_username: Mapped[str] = mapped_column(String(64), default="")
    l_domain: Mapped[str] = mapped_column(String(64), default="")
    r_username: Mapped[str] = mapped_column(String(64), default="")
    r_domain: Mapped[str] = mapped_column(String(64), default="")
    realm: Mapped[str] = mapped_column(String(64), default="")
    auth_username: Mapped[str] = mapped_column(String(64), default="")
    auth_password: Mapped[str] = mapped_column(String(64), default="")
    auth_ha1: Mapped[str] = mapped_column(String(128), default="")
    auth_proxy: Mapped[str] = mapped_column(String(255), default="")
    expires: Mapped[int] = mapped_column(Integer, default=0)
    flags: Mapped[int] = mapped_column(Integer, default=0)
    reg_delay: Mapped[int] = mapped_column(Integer, default=0)
    contact_addr: Mapped[str] = mapped_column(String(255), default="")
    socket: Mapped[str] = mapped_column(String(128), default="")


class RegistrationState(StrEnum):
    OFF = "off"  # trunk.register is false
    REGISTERED = "registered"
    REGISTERING = "registering"  # a REGISTER (first, renewal or retry) is on its way
    FAILED = "failed"  # refused or unanswered; retried every RETRY_AFTER_FAILURE_S
    UNKNOWN = "unknown"  # Kamailio did not answer the question


class UacRecords(Protocol):
    """Kamailio's in-memory registrations (uac.reg_info); raises EdgeUnavailable."""

    async def uac_registration(self, l_uuid: str) -> Mapping[str, Any] | None: ...


class UacControl(UacRecords, Protocol):
    async def uac_unregister(self, l_uuid: str) -> None: ...


def registration_row(settings: Settings) -> dict[str, str | int] | None:
    """The uacreg row for the trunk, or None when it does not register.

    The password is stored in clear: no realm is configured to hash it with (the provider
    names it in its challenge), and config.toml holds it in clear anyway.
    """
    trunk = settings.trunk
    if not trunk.registration:
        return None
    return {
        "l_uuid": REGISTRATION_ID,
        "l_username": trunk.username,
        "l_domain": settings.sip.domain,
        "r_username": trunk.username,
        "r_domain": trunk.provider_host,
        "realm": "",  # answer whichever realm the provider challenges with
        "auth_username": trunk.username,
        "auth_password": trunk.password,
        "auth_proxy": trunk.uri,  # where the REGISTER goes, port included
        "expires": trunk.register_expires,
    }


def renewal_tick_seconds(trunk: TrunkSettings) -> int:
    return max(MIN_RENEWAL_TICK_S, trunk.register_expires // 10)


async def store_registration(settings: Settings) -> None:
    """Make the uacreg table hold exactly the trunk's row (none when it does not register).

    Kamailio reads the table when it starts, so this runs before it does.
    """
    row = registration_row(settings)
    engine = create_engine(settings.database_url)
    sessions = create_session_factory(engine)
    try:
        async with sessions.begin() as session:
            await session.execute(delete(UacRegistration))
            if row is not None:
                session.add(UacRegistration(**row))
    finally:
        await sessions.dispose()
        await engine.dispose()


def state_of_record(record: Mapping[str, Any] | None) -> RegistrationState:
    """The state of a uac.reg_info record; None: Kamailio holds no such registration (it
    refused the row, and says why in its log)."""
    if record is None:
        return RegistrationState.FAILED
    flags = int(record["flags"])
    if flags & _FLAG_ONLINE and int(record["diff_expires"]) > 0:
        return RegistrationState.REGISTERED
    if flags & _FLAG_ONGOING:
        return RegistrationState.REGISTERING
    return RegistrationState.FAILED


async def registration_state(trunk: TrunkSettings, edge: UacRecords) -> RegistrationState:
    if not trunk.registration:
        return RegistrationState.OFF
    try:
        record = await edge.uac_registration(REGISTRATION_ID)
    except EdgeUnavailable:
        return RegistrationState.UNKNOWN
    return state_of_record(record)


async def unregister(trunk: TrunkSettings, edge: UacControl) -> None:
    """Before the edge stops: a REGISTER with expires 0, so the provider stops sending calls
    to a Contact nobody answers (as Asterisk does at shutdown). Kamailio's record does not
    show the provider's answer, so the edge is given UNREGISTER_LINGER_S for the challenge
    and the answer; a provider that misses it forgets the Contact when it expires."""
    if not trunk.registration:
        return
    try:
        state = state_of_record(await edge.uac_registration(REGISTRATION_ID))
        if state is not RegistrationState.REGISTERED:
            return  # nothing the provider holds (or nothing Kamailio knows of)
        await edge.uac_unregister(REGISTRATION_ID)
    except EdgeUnavailable as exc:
        log.warning("trunk_unregister_failed", error=str(exc))
        return
    log.info("trunk_unregister_sent")
    await asyncio.sleep(UNREGISTER_LINGER_S)
