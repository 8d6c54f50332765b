"""The extension namespace rule: 1 to 4 decimal digits, shared by users, queues and menus."""

from __future__ import annotations

import re
from enum import StrEnum

MAX_EXTENSION_LENGTH = 4
EXTENSION_PATTERN = rf"^[0-9]{{1,{MAX_EXTENSION_LENGTH}}}$"
_EXTENSION_RE = re.compile(EXTENSION_PATTERN)


class OwnerType(StrEnum):
    USER = "user"
    QUEUE = "queue"
    MENU = "menu"


def is_valid_extension(number: str) -> bool:
    # re's \d would also accept Arabic-Indic and other Unicode digits a phone cannot dial.
    return bool(_EXTENSION_RE.fullmatch(number))
