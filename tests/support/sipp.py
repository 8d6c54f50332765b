"""SIPp for tests: callers (one scenario rendered per call, run against the edge) and
servers standing in for the provider (its registrar, its trunk), all on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import re
import socket
import wave
from dataclasses import dataclass
from pathlib import Path

from tests.support.dtmf_pcap import write_dtmf_pcap
from tests.support.ports import free_port, sipp_media_port

_INVITE = """
  <send retrans="500">
    <![CDATA[
      INVITE sip:{request_user}@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Test Caller" <sip:{caller}@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:{number}@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:{caller}@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=caller 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-15
      a=sendrecv
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="{expect}" rtd="true" rrs="true"/>
"""

_ACK = """
  <send>
    <![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Test Caller" <sip:{caller}@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:{number}@[remote_ip]:[remote_port]>[peer_tag_param]
      [routes]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
"""

_CALLER_BYE = """
  <send retrans="500">
    <![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Test Caller" <sip:{caller}@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:{number}@[remote_ip]:[remote_port]>[peer_tag_param]
      [routes]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <recv response="200" crlf="true"/>
"""

# 200 OK to the request just received (a BYE).
_OK = """
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0
    ]]>
  </send>"""

_REMOTE_BYE = (
    """
  <recv request="BYE" timeout="{bye_timeout_ms}"/>"""
    + _OK
    + "\n"
)


def _mu_law(sample: int) -> int:
    """One 16-bit linear sample as a G.711 mu-law byte."""
    sign = 0x80 if sample < 0 else 0
    magnitude = min(abs(sample), 32635) + 0x84
    exponent = max(magnitude.bit_length() - 8, 0)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | exponent << 4 | mantissa) & 0xFF


def write_tone_wav(frequency: int, path: Path, seconds: float = 1.0) -> Path:
    """A tone as 8 kHz mu-law samples in a WAV, what SIPp's rtp_stream sends as PCMU."""
    rate = 8000
    encoded = bytes(
        _mu_law(int(8000 * math.sin(2 * math.pi * frequency * n / rate)))
        for n in range(int(rate * seconds))
    )
    with wave.open(str(path), "wb") as out:  # the header says 8-bit PCM; SIPp sends the bytes
        out.setnchannels(1)
        out.setsampwidth(1)
        out.setframerate(rate)
        out.writeframes(encoded)
    return path


@dataclass(frozen=True)
class SippResult:
    returncode: int
    output: str

    @property
    def succeeded(self) -> bool:
        return self.returncode == 0


def render_caller_scenario(
    folder: Path,
    number: str,
    *,
    digits: str = "",
    digits_after_s: float = 1.0,
    stay_s: float = 2.0,
    hang_up: str = "caller",  # "caller" sends BYE; "remote" waits for the service's BYE
    expect: int = 200,
    caller: str = "4930111222",
    bye_timeout_s: float = 60.0,
    request_user: str | None = None,
    tone_hz: int | None = None,
) -> Path:
    """A SIPp scenario for one caller to `number`, DTMF `digits` `digits_after_s` into it.

    `request_user`: the Request-URI's user when it is not the number (To names the number).
    `tone_hz`: the caller speaks (a tone, looped) from the answer on; otherwise it is silent.
    """
    steps = [
        _INVITE.format(
            number=number, caller=caller, expect=expect, request_user=request_user or number
        )
    ]
    if expect == 200:
        steps.append(_ACK.format(number=number, caller=caller))
        if tone_hz is not None:
            tone = write_tone_wav(tone_hz, folder / f"tone-{tone_hz}.wav")
            steps.append(f'  <nop><action><exec rtp_stream="{tone},-1,0"/></action></nop>')
        steps.append(f'  <pause milliseconds="{int(digits_after_s * 1000)}"/>')
        if digits:
            pcap = folder / f"dtmf-{digits.replace('#', 'H').replace('*', 'S')}.pcap"
            length_s = write_dtmf_pcap(digits, pcap)
            steps.append(
                f'  <nop><action><exec play_pcap_audio="{pcap}"/></action></nop>\n'
                f'  <pause milliseconds="{int(length_s * 1000) + 200}"/>'
            )
        if hang_up == "caller":
            steps.append(f'  <pause milliseconds="{int(stay_s * 1000)}"/>')
            steps.append(_CALLER_BYE.format(number=number, caller=caller))
        else:
            steps.append(_REMOTE_BYE.format(bye_timeout_ms=int(bye_timeout_s * 1000)))
    scenario = folder / f"caller-{number}-{free_port()}.xml"
    scenario.write_text(
        '<?xml version="1.0" encoding="ISO-8859-1" ?>\n'
        '<scenario name="test caller">\n' + "\n".join(steps) + "\n</scenario>\n"
    )
    return scenario


async def call_number(
    folder: Path,
    edge_port: int,
    number: str,
    *,
    digits: str = "",
    digits_after_s: float = 1.0,
    stay_s: float = 2.0,
    hang_up: str = "caller",
    expect: int = 200,
    caller: str = "4930111222",
    timeout_s: float = 60.0,
    request_user: str | None = None,
    local_port: int | None = None,
    edge_host: str = "127.0.0.1",
    tone_hz: int | None = None,
) -> SippResult:
    """One SIPp call to `number` through the edge (or a worker at `edge_port`), from
    127.0.0.1. SIPp sends RTP only while it plays digits or a `tone_hz`: otherwise the line
    is silent."""
    scenario = render_caller_scenario(
        folder, number, digits=digits, digits_after_s=digits_after_s, stay_s=stay_s,
        hang_up=hang_up, expect=expect, caller=caller, bye_timeout_s=timeout_s,
        request_user=request_user, tone_hz=tone_hz,
    )  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        "sipp", f"{edge_host}:{edge_port}", "-sf", str(scenario), "-m", "1", "-l", "1",
        "-i", "127.0.0.1", "-p", str(local_port or free_port()), "-mi", "127.0.0.1",
        "-mp", str(sipp_media_port()), "-timeout", f"{int(timeout_s)}s", "-timeout_error",
        "-nostdin", "-trace_err", "-error_file", str(scenario) + ".err",
        "-trace_msg", "-message_file", str(scenario) + ".msg",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=folder,
    )  # fmt: skip
    output, _ = await process.communicate()
    errors = Path(str(scenario) + ".err")
    text = output.decode(errors="replace")
    if errors.exists():
        text += "\n" + errors.read_text(errors="replace")
    return SippResult(process.returncode or 0, text)


# -- the provider's side ------------------------------------------------------------------

NONCE = "5e1f0c2a9b7d4e3f8a6c1b0d2e4f6a8c"
PROVIDER_REALM = "provider.test"

_REPLY_HEAD = """
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]"""


# The SDP of a 200 that answers an INVITE (one PCMU stream), and what a callee does after it.
_SDP_ANSWER = """
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=sipp 1 1 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000"""
_TALK_UNTIL_BYE = (
    """
  <recv request="ACK"/>
  <recv request="BYE"/>"""
    + _OK
)


def _verify_or_fail(what: str, ok_label: str) -> str:
    """Continue at `ok_label` if the last request's Authorization verified, else fail the call."""
    return f"""
  <nop test="credentials_ok" next="{ok_label}"/>
  <nop><action><error message="{what}: the credentials do not verify"/></action></nop>
  <label id="{ok_label}"/>"""


def registrar_scenario(
    username: str, password: str, contact: str, grants: list[int], *, unregister: bool = False
) -> str:
    """A provider's registrar: for each granted lifetime in `grants`, a REGISTER is challenged
    (401), the REGISTER that follows must carry `username`/`password` (verifyauth) and the
    Contact `contact`, and gets 200 with that lifetime. Renewals keep the Call-ID.
    `unregister`: then a REGISTER asking for `Expires: 0` must come, the same way."""
    rounds = []
    for number, seconds in enumerate([*grants, 0] if unregister else grants, start=1):
        forget = (
            """
      <ereg regexp="^ *0 *$" search_in="hdr" header="Expires:" check_it="true"
            assign_to="registered_contact"/>"""
            if unregister and number > len(grants)
            else ""
        )
        rounds.append(f"""
  <recv request="REGISTER"/>
  <send>
    <![CDATA[
      SIP/2.0 401 Unauthorized{_REPLY_HEAD}
      WWW-Authenticate: Digest realm="{PROVIDER_REALM}", nonce="{NONCE}{number}"
      Content-Length: 0
    ]]>
  </send>
  <recv request="REGISTER">
    <action>
      <verifyauth assign_to="credentials_ok" username="{username}" password="{password}"/>
      <ereg regexp="{re.escape(contact)}>" search_in="hdr" header="Contact:" check_it="true"
            assign_to="registered_contact"/>{forget}
    </action>
  </recv>{_verify_or_fail(f"REGISTER {number}", f"registered{number}")}
  <send>
    <![CDATA[
      SIP/2.0 200 OK{_REPLY_HEAD}
      [last_Contact:];expires={seconds}
      Content-Length: 0
    ]]>
  </send>""")
    return _scenario("provider registrar", "".join(rounds))


def challenging_trunk_scenario(challenge: int, username: str, password: str) -> str:
    """A provider's trunk: the first INVITE is challenged (401 WWW-Authenticate or 407
    Proxy-Authenticate); the INVITE with credentials is answered (its Record-Route copied, as
    RFC 3261 12.1.1 asks), then the BYE. The answered INVITE must have passed a proxy that
    Record-Routes (the edge): the call fails otherwise.

    SIPp's verifyauth reads only an Authorization header, so after a 407 the scenario logs
    the Proxy-Authorization header for the test to check (digest_response_is_valid)."""
    if challenge == 401:
        challenge_header = "WWW-Authenticate"
        check = f"""
      <verifyauth assign_to="credentials_ok" username="{username}" password="{password}"/>"""
        verdict = _verify_or_fail("INVITE", "authorized")
    else:
        challenge_header = "Proxy-Authenticate"
        check = """
      <ereg regexp="Digest .*" search_in="hdr" header="Proxy-Authorization:" check_it="true"
            assign_to="credentials"/>
      <log message="[$credentials]"/>"""
        verdict = ""
    reason = "Unauthorized" if challenge == 401 else "Proxy Authentication Required"
    return _scenario(
        "provider trunk",
        f"""
  <recv request="INVITE"/>
  <send>
    <![CDATA[
      SIP/2.0 {challenge} {reason}{_REPLY_HEAD}
      {challenge_header}: Digest realm="{PROVIDER_REALM}", nonce="{NONCE}"
      Content-Length: 0
    ]]>
  </send>
  <recv request="ACK"/>
  <recv request="INVITE">
    <action>
      <ereg regexp="sip:[^;>]*;lr" search_in="hdr" header="Record-Route:" check_it="true"
            assign_to="record_route"/>
      <log message="record-route [$record_route]"/>{check}
    </action>
  </recv>{verdict}
  <send>
    <![CDATA[
      SIP/2.0 200 OK{_REPLY_HEAD}
      [last_Record-Route:]
      Contact: <sip:[local_ip]:[local_port]>{_SDP_ANSWER}
    ]]>
  </send>{_TALK_UNTIL_BYE}""",
    )


def digest_response_is_valid(header: str, method: str, username: str, password: str) -> bool:
    """Whether a Digest credentials header (RFC 2617, MD5, qop absent or auth) answers its
    own nonce with this password."""
    fields = dict(re.findall(r'(\w+)="?([^",]*)"?', header.removeprefix("Digest ")))
    if fields.get("username") != username:
        return False

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    ha1 = md5(f"{username}:{fields['realm']}:{password}")
    ha2 = md5(f"{method}:{fields['uri']}")
    if fields.get("qop") == "auth":
        expected = md5(f"{ha1}:{fields['nonce']}:{fields['nc']}:{fields['cnonce']}:auth:{ha2}")
    else:
        expected = md5(f"{ha1}:{fields['nonce']}:{ha2}")
    return fields.get("response") == expected


def _scenario(name: str, body: str) -> str:
    return (
        '<?xml version="1.0" encoding="ISO-8859-1" ?>\n'
        f'<scenario name="{name}">{body}\n</scenario>\n'
    )


class SippServer:
    """SIPp playing one scenario as a server, once, on 127.0.0.1:`port` (UDP)."""

    def __init__(self, process: asyncio.subprocess.Process, scenario: Path) -> None:
        self._process = process
        self.scenario = scenario
        self.log = Path(str(scenario) + ".log")

    @classmethod
    async def start(
        cls, folder: Path, name: str, scenario: str, port: int, timeout_s: float = 30.0
    ) -> SippServer:
        """Returns once SIPp listens on `port`."""
        path = folder / f"{name}-{port}.xml"
        path.write_text(scenario)
        process = await asyncio.create_subprocess_exec(
            "sipp", "-sf", str(path), "-i", "127.0.0.1", "-p", str(port), "-m", "1",
            "-mi", "127.0.0.1", "-mp", str(sipp_media_port()), "-timeout", f"{int(timeout_s)}s",
            "-timeout_error", "-nostdin", "-trace_err", "-error_file", str(path) + ".err",
            "-trace_logs", "-log_file", str(path) + ".log",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=folder,
        )  # fmt: skip
        server = cls(process, path)
        async with asyncio.timeout(5):
            while not _udp_port_taken(port):
                if process.returncode is not None:
                    raise RuntimeError(f"SIPp exited at start: {await server.result()}")
                await asyncio.sleep(0.05)
        return server

    async def result(self) -> SippResult:
        """Waits for SIPp to end: exit code 0 when its one call went through the scenario."""
        output, _ = await self._process.communicate()
        text = output.decode(errors="replace")
        errors = Path(str(self.scenario) + ".err")
        if errors.exists():
            text += "\n" + errors.read_text(errors="replace")
        return SippResult(self._process.returncode or 0, text)

    async def stop(self) -> None:
        if self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
            await self._process.wait()


def _udp_port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


# -- desk phones that are separate processes ---------------------------------------------
# One PJSUA2 endpoint holds every test phone of the test process, and pjsip refuses the
# second of a forked INVITE's copies (482, merged request); real desk phones are devices of
# their own. Forking tests (ring_all) therefore use SIPp phones: one process each.

_PHONE_HEAD = """
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:{extension}@{domain}>;tag=[pid]SIPpReg[call_number]
      To: <sip:{extension}@{domain}>
      Call-ID: [call_id]
      Contact: <sip:{extension}@[local_ip]:[local_port]>
      Expires: 300
      Max-Forwards: 70"""


def register_scenario(extension: str, password: str, domain: str) -> str:
    """A desk phone's REGISTER, digest challenge answered."""
    head = _PHONE_HEAD.format(extension=extension, domain=domain)
    return _scenario(
        "desk phone registration",
        f"""
  <send retrans="500">
    <![CDATA[
      REGISTER sip:[remote_ip]:[remote_port] SIP/2.0{head}
      CSeq: 1 REGISTER
      Content-Length: 0
    ]]>
  </send>
  <recv response="401" auth="true"/>
  <send retrans="500">
    <![CDATA[
      REGISTER sip:[remote_ip]:[remote_port] SIP/2.0{head}
      CSeq: 2 REGISTER
      [authentication username={extension} password={password}]
      Content-Length: 0
    ]]>
  </send>
  <recv response="200"/>""",
    )


def desk_phone_scenario(extension: str, answer_after_s: float | None) -> str:
    """A ringing desk phone: answers after `answer_after_s` and waits for the BYE, or (None)
    rings until it is CANCELled."""
    reply_head = f"""
      [last_Via:]
      [last_Record-Route:]
      [last_From:]
      [last_To:];tag=[pid]SIPpPhone[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:{extension}@[local_ip]:[local_port]>"""
    ringing = f"""
  <recv request="INVITE" crlf="true"/>
  <send>
    <![CDATA[
      SIP/2.0 180 Ringing{reply_head}
      Content-Length: 0
    ]]>
  </send>"""
    if answer_after_s is None:
        return _scenario(
            "desk phone rung in vain",
            ringing
            + """
  <recv request="CANCEL"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpPhone[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0
    ]]>
  </send>
  <send>
    <![CDATA[
      SIP/2.0 487 Request Terminated
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpPhone[call_number]
      [last_Call-ID:]
      CSeq: [last_cseq_number] INVITE
      Content-Length: 0
    ]]>
  </send>
  <recv request="ACK"/>""",
        )
    return _scenario(
        "desk phone that answers",
        ringing
        + f"""
  <pause milliseconds="{int(answer_after_s * 1000)}"/>
  <send retrans="500">
    <![CDATA[
      SIP/2.0 200 OK{reply_head}{_SDP_ANSWER}
    ]]>
  </send>{_TALK_UNTIL_BYE}""",
    )


async def register_sipp_phone(
    folder: Path, edge_port: int, extension: str, password: str, domain: str, port: int
) -> SippResult:
    """Register `extension` with Contact 127.0.0.1:`port`, where a desk-phone SippServer
    is to listen next."""
    path = folder / f"register-{extension}.xml"
    path.write_text(register_scenario(extension, password, domain))
    process = await asyncio.create_subprocess_exec(
        "sipp", f"127.0.0.1:{edge_port}", "-sf", str(path), "-m", "1", "-l", "1",
        "-i", "127.0.0.1", "-p", str(port), "-timeout", "10s", "-timeout_error", "-nostdin",
        "-trace_err", "-error_file", str(path) + ".err",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=folder,
    )  # fmt: skip
    output, _ = await process.communicate()
    return SippResult(process.returncode or 0, output.decode(errors="replace"))
