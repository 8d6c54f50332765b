"""SIP credentials: generated passwords and the digest ha1 that is all we keep of them."""

from __future__ import annotations

import hashlib
import secrets
import string

# Letters and digits only: typed into desk-phone web UIs and keypads, no quoting problems.
_PASSWORD_ALPHABET = string.ascii_letters + string.digits
PASSWORD_LENGTH = 20  # ~119 bits


def generate_sip_password() -> str:
    return "".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(PASSWORD_LENGTH))


def digest_ha1(username: str, realm: str, password: str) -> str:
    """RFC 2617 HA1 = MD5(username:realm:password), the form Kamailio's auth_db compares."""
    return hashlib.md5(f"{username}:{realm}:{password}".encode()).hexdigest()
