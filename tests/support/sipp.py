"""SIPp callers for tests: one scenario rendered per call, run against the edge on loopback."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from tests.support.dtmf_pcap import write_dtmf_pcap
from tests.support.ports import free_port

_INVITE = """
  <send retrans="500">
    <![CDATA[
      INVITE sip:{number}@[remote_ip]:[remote_port] SIP/2.0
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

_REMOTE_BYE = """
  <recv request="BYE" timeout="{bye_timeout_ms}"/>
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
  </send>
"""


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
) -> Path:
    """A SIPp scenario for one caller to `number`, DTMF `digits` `digits_after_s` into it."""
    steps = [_INVITE.format(number=number, caller=caller, expect=expect)]
    if expect == 200:
        steps.append(_ACK.format(number=number, caller=caller))
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
) -> SippResult:
    """One SIPp call to `number` through the edge."""
    scenario = render_caller_scenario(
        folder, number, digits=digits, digits_after_s=digits_after_s, stay_s=stay_s,
        hang_up=hang_up, expect=expect, caller=caller, bye_timeout_s=timeout_s,
    )  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        "sipp", f"127.0.0.1:{edge_port}", "-sf", str(scenario), "-m", "1", "-l", "1",
        "-i", "127.0.0.1", "-p", str(free_port()), "-mi", "127.0.0.1",
        "-mp", str(free_port()), "-timeout", f"{int(timeout_s)}s", "-timeout_error",
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
