"""Where a call goes: one JSON shape everywhere (numbers, business hours, menus, queue
overflow, forwarding), a union discriminated by `type`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from core.sql_bounds import Id
from extensions.numbering import EXTENSION_PATTERN

EXTERNAL_NUMBER_PATTERN = r"^\+?[0-9]{2,20}$"


class _Destination(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ExtensionDestination(_Destination):
    type: Literal["extension"] = "extension"
    extension: Annotated[str, Field(pattern=EXTENSION_PATTERN)]


# Callers of a higher priority are served first in a queue, then the longest waiting.
MAX_QUEUE_PRIORITY = 100


class QueueDestination(_Destination):
    type: Literal["queue"] = "queue"
    id: Id
    # The priority callers sent this way wait with (a number's, a menu option's, an overflow's).
    priority: Annotated[int, Field(ge=0, le=MAX_QUEUE_PRIORITY)] = 0


class MenuDestination(_Destination):
    type: Literal["menu"] = "menu"
    id: Id


class VoicemailDestination(_Destination):
    type: Literal["voicemail"] = "voicemail"
    box: Id


class NumberDestination(_Destination):
    type: Literal["number"] = "number"
    number: Annotated[str, Field(pattern=EXTERNAL_NUMBER_PATTERN)]


class HangupDestination(_Destination):
    type: Literal["hangup"] = "hangup"


Destination = Annotated[
    ExtensionDestination
    | QueueDestination
    | MenuDestination
    | VoicemailDestination
    | NumberDestination
    | HangupDestination,
    Field(discriminator="type"),
]
