"""What a desk phone dialled: its own extension, another extension, or an external number."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from extensions.numbering import MAX_EXTENSION_LENGTH

# An external number with optional post-dial digits: "+4930123456;1027" or "030123456#1027".
_EXTERNAL = re.compile(r"^(?P<number>\+?[0-9]{5,20})(?:[;#](?P<post_dial>[0-9*#]{1,20}))?$")
_EXTENSION = re.compile(rf"^[0-9]{{1,{MAX_EXTENSION_LENGTH}}}$")


class Dialled(Enum):
    OWN_EXTENSION = "own_extension"
    EXTENSION = "extension"
    UNKNOWN_EXTENSION = "unknown_extension"
    EXTERNAL = "external"
    INVALID = "invalid"


@dataclass(frozen=True)
class DialPlan:
    kind: Dialled
    target: str = ""
    # Sent as RFC 4733 DTMF once the external party answers (an extension behind its IVR).
    post_dial: str = ""


def plan_phone_call(dialled: str, own_extension: str, extensions: frozenset[str]) -> DialPlan:
    """Pure: `dialled` is the Request-URI user part a phone sent (URL-unescaped)."""
    if _EXTENSION.fullmatch(dialled):
        if dialled == own_extension:
            return DialPlan(Dialled.OWN_EXTENSION, dialled)
        if dialled in extensions:
            return DialPlan(Dialled.EXTENSION, dialled)
        return DialPlan(Dialled.UNKNOWN_EXTENSION, dialled)
    external = _EXTERNAL.fullmatch(dialled)
    if external:
        return DialPlan(Dialled.EXTERNAL, external["number"], external["post_dial"] or "")
    return DialPlan(Dialled.INVALID, dialled)
