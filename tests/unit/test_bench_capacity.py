"""The capacity benchmark's own measuring: the process tree's CPU, SIPp's counters, the audio."""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.capacity import (
    CpuWindow,
    SippRun,
    _rank,
    caller_scenario,
    memory_mb,
    process_tree,
    write_speech_pcap,
)
from tests.support.ports import free_port


def test_cpu_of_a_child_that_exited_during_the_window_counts() -> None:
    # The parent starts a child that burns ~0.6 s of CPU and exits; the parent reaps it.
    script = (
        "import subprocess, sys, time\n"
        "time.sleep(0.3)\n"
        "subprocess.run([sys.executable, '-c',"
        " 'import time\\nend = time.monotonic() + 0.6\\nwhile time.monotonic() < end: pass'])\n"
        "time.sleep(30)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script])
    try:
        window = CpuWindow(parent.pid)
        window.start()
        time.sleep(0.5)
        assert len(process_tree(parent.pid)) == 2  # the burning child is in the tree
        time.sleep(1.0)
        cpu, seconds, processes = window.stop()
        assert processes == 1  # gone, yet its time is in the parent's cutime
        assert cpu * seconds / 100 >= 0.4
        pss, uss = memory_mb([parent.pid])
        assert 0 < uss <= pss + 1
    finally:
        parent.kill()
        parent.wait()


def test_speech_pcap_is_one_pcma_stream_of_20_ms_packets(tmp_path: Path) -> None:
    path = tmp_path / "speech.pcap"
    write_speech_pcap(path, 1.0)
    data = path.read_bytes()
    offset, packets = 24, []
    while offset < len(data):
        length = struct.unpack("<I", data[offset + 8 : offset + 12])[0]
        rtp = data[offset + 16 + 14 + 20 + 8 : offset + 16 + length]
        packets.append((*struct.unpack("!BBHII", rtp[:12]), len(rtp) - 12))
        offset += 16 + length
    assert len(packets) == 50
    assert {(p[0], p[1], p[4], p[5]) for p in packets} == {(0x80, 8, 0x5EED, 160)}
    assert [p[2] - packets[0][2] for p in packets] == list(range(50))
    assert [p[3] - packets[0][3] for p in packets] == [160 * i for i in range(50)]


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (_rank(values, 0.5), _rank(values, 0.99), _rank([7.0], 0.99)) == (50.0, 99.0, 7.0)


REFUSING_UAS = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="refuses every call">
  <recv request="INVITE"/>
  <send>
    <![CDATA[
      SIP/2.0 503 Service Unavailable
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpRefuse[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0
    ]]>
  </send>
  <recv request="ACK"/>
</scenario>
"""


@pytest.mark.skipif(shutil.which("sipp") is None, reason="needs SIPp (sip-tester)")
def test_refused_calls_are_failures_with_their_kind(tmp_path: Path) -> None:
    port = free_port()
    uas_file = tmp_path / "uas.xml"
    uas_file.write_text(REFUSING_UAS)
    uas = subprocess.Popen(
        ["sipp", "-sf", str(uas_file), "-i", "127.0.0.1", "-p", str(port), "-m", "3",
         "-timeout", "20s", "-nostdin"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(0.5)
        run = SippRun(
            tmp_path / "callers", caller_scenario(tmp_path / "callers", 1.0), port,
            rate=10, calls=3, limit=3, timeout_s=20,
        )  # fmt: skip
        run.start()
        outcome = run.wait()
    finally:
        uas.kill()
        uas.wait()
    assert outcome.exit_code == 1
    assert (outcome.created, outcome.succeeded, outcome.failed) == (3, 0, 3)
    assert outcome.failure_kinds == {"FailedUnexpectedMessage": 3}
    assert outcome.latencies_ms == []
    assert any("503" in line for line in outcome.errors)
