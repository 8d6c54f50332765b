"""Takes an in-dialog REFER away from pjsua before it acts on it.

Stock pjsua2 answers a REFER it accepts by dialling the Refer-To itself, past the controller,
and gives the transferring leg's Python object the new call (docs/notes/refer-in-pjsua2.md).
So a pjsip module, registered through symbols the pinned wheel exports, sits before the dialog
layer: a REFER on one of our legs is answered 202 here and handed to the worker, which then
sends its own NOTIFYs (no pjsua subscription exists in that dialog, so that is safe). Anything
this module cannot read is left to pjsua, whose onCallTransferRequest declines it (603).

Only the `pjsip_module` struct layout (unchanged since pjsip 1.x) is assumed. The request
text is pjsip's NUL-terminated copy of the packet inside `pjsip_rx_data`; its offset is found
once by looking for the request line and checked again on every REFER.
"""

from __future__ import annotations

import ctypes
import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote

import pjsua2._pjsua2 as _native
import structlog

log = structlog.get_logger(__name__)

# Before PJSIP_MOD_PRIORITY_UA_PROXY_LAYER (32): the dialog never sees what we take.
_PRIORITY = 30
# The packet buffer follows the transport info and a timestamp, a few hundred bytes in.
_PACKET_SEARCH_BYTES = 1024
_ACCEPTED = 202


@dataclass(frozen=True)
class ReferRequest:
    sip_call_id: str
    cseq: int
    # The Refer-To URI without its headers; `replaces` is the decoded Replaces header of an
    # attended transfer ("call-id;to-tag=..;from-tag=..").
    target: str
    replaces: str | None
    referred_by: str | None


# Returns True when the REFER is ours (answered 202 here), False to leave it to pjsua.
TakeRefer = Callable[[ReferRequest], bool]


class _PjStr(ctypes.Structure):
    _fields_ = [("ptr", ctypes.c_char_p), ("slen", ctypes.c_ssize_t)]


_ON_RX = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)


class _PjsipModule(ctypes.Structure):
    _fields_ = [
        ("prev", ctypes.c_void_p),
        ("next", ctypes.c_void_p),
        ("name", _PjStr),
        ("id", ctypes.c_int),
        ("priority", ctypes.c_int),
        ("load", ctypes.c_void_p),
        ("start", ctypes.c_void_p),
        ("stop", ctypes.c_void_p),
        ("unload", ctypes.c_void_p),
        ("on_rx_request", _ON_RX),
        ("on_rx_response", ctypes.c_void_p),
        ("on_tx_request", ctypes.c_void_p),
        ("on_tx_response", ctypes.c_void_p),
        ("on_tsx_state", ctypes.c_void_p),
    ]


_lib = ctypes.CDLL(_native.__file__)
_lib.pjsua_get_pjsip_endpt.restype = ctypes.c_void_p
_lib.pjsip_endpt_register_module.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
_lib.pjsip_rx_data_get_info.restype = ctypes.c_char_p
_lib.pjsip_rx_data_get_info.argtypes = [ctypes.c_void_p]
# (endpoint, rdata, status code, status text, headers, body)
_lib.pjsip_endpt_respond_stateless.argtypes = [
    ctypes.c_void_p,
    ctypes.c_void_p,
    ctypes.c_int,
    ctypes.c_void_p,
    ctypes.c_void_p,
    ctypes.c_void_p,
]


class ReferInterceptor:
    """Registered once per endpoint, on the UA thread after libStart. pjsip keeps pointers into
    this object until libDestroy, so the worker keeps it for the life of the process."""

    def __init__(self, take: TakeRefer) -> None:
        self._take = take
        self._packet_offset: int | None = None
        self._on_rx = _ON_RX(self._on_rx_request)  # the C thunk must outlive the module
        self._name = b"mod-pbx-refer"
        self._module = _PjsipModule()
        self._module.name = _PjStr(self._name, len(self._name))
        self._module.id = -1
        self._module.priority = _PRIORITY
        self._module.on_rx_request = self._on_rx
        self._endpoint = _lib.pjsua_get_pjsip_endpt()
        status = _lib.pjsip_endpt_register_module(self._endpoint, ctypes.addressof(self._module))
        if status != 0:
            raise RuntimeError(f"pjsip_endpt_register_module failed ({status})")

    def _on_rx_request(self, rdata: int) -> int:
        # No exception may cross into C; anything unexpected leaves the REFER to pjsua.
        try:
            info = _lib.pjsip_rx_data_get_info(rdata) or b""
            if not info.startswith(b"Request msg REFER/"):
                return 0
            request = parse_refer(self._packet(rdata))
            if request is None or not self._take(request):
                return 0
            _lib.pjsip_endpt_respond_stateless(self._endpoint, rdata, _ACCEPTED, None, None, None)
            return 1
        except Exception:
            log.exception("refer_hook_failed")
            return 0

    def _packet(self, rdata: int) -> str:
        offset = self._packet_offset
        if offset is None or ctypes.string_at(rdata + offset, 6) != b"REFER ":
            offset = ctypes.string_at(rdata, _PACKET_SEARCH_BYTES).find(b"REFER ")
            if offset < 0:
                return ""
            self._packet_offset = offset
        return (ctypes.c_char_p(rdata + offset).value or b"").decode(errors="replace")


def parse_refer(text: str) -> ReferRequest | None:
    """The parts of a REFER's text a transfer needs; None if it lacks any."""
    head = text.split("\r\n\r\n", 1)[0].replace("\r\n ", " ").replace("\r\n\t", " ")
    if not head.startswith("REFER "):
        return None
    call_id = _header(head, "Call-ID", "i")
    cseq = _header(head, "CSeq")
    refer_to = _header(head, "Refer-To", "r")
    if not call_id or not refer_to or not cseq or not cseq.split()[0].isdigit():
        return None
    target, replaces = split_refer_to(refer_to)
    return ReferRequest(
        sip_call_id=call_id,
        cseq=int(cseq.split()[0]),
        target=target,
        replaces=replaces,
        referred_by=_header(head, "Referred-By", "b") or None,
    )


def split_refer_to(value: str) -> tuple[str, str | None]:
    """'<sip:1002@pbx?Replaces=abc%40h%3Bto-tag%3D1>' -> ('sip:1002@pbx', 'abc@h;to-tag=1')."""
    uri = value.strip()
    if uri.startswith("<"):
        uri = uri[1 : uri.find(">")] if ">" in uri else uri[1:]
    elif ";" in uri:
        uri = uri.split(";", 1)[0]  # header parameters of a bare URI
    uri, _, headers = uri.partition("?")
    replaces = None
    for pair in headers.split("&") if headers else []:
        name, _, raw = pair.partition("=")
        if name.lower() == "replaces":
            replaces = unquote(raw)
    return uri, replaces


def _header(head: str, *names: str) -> str:
    for name in names:
        found = re.search(rf"^{re.escape(name)}[ \t]*:[ \t]*(.*)$", head, re.M | re.I)
        if found:
            return found.group(1).strip()
    return ""
