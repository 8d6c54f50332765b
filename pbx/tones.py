"""Call-progress tones as WAV files, made once with sox (ETSI ringback: 425 Hz, 1 s on, 4 s off;
the voicemail beep: 1 kHz for half a second)."""

from __future__ import annotations

import subprocess
from pathlib import Path

RINGBACK_ARGS = ["synth", "1", "sine", "425", "vol", "0.5", "pad", "0", "4"]
BEEP_ARGS = ["synth", "0.5", "sine", "1000", "vol", "0.5", "pad", "0", "0.1"]


class ToneError(Exception):
    pass


def make_ringback_tone(folder: Path) -> Path:
    """The ringback WAV (8 kHz mono 16-bit) callers hear while a phone rings; blocking."""
    return _make_tone(folder / "ringback-425.wav", RINGBACK_ARGS)


def make_beep_tone(folder: Path) -> Path:
    """The beep before a voicemail recording starts; blocking."""
    return _make_tone(folder / "beep-1000.wav", BEEP_ARGS)


def _make_tone(path: Path, synth: list[str]) -> Path:
    folder = path.parent
    if path.exists():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp.wav")
    made = subprocess.run(
        ["sox", "-n", "-r", "8000", "-c", "1", "-b", "16", str(partial), *synth],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if made.returncode != 0:
        raise ToneError(f"sox could not make {path.name}: {made.stderr.strip()}")
    partial.replace(path)  # atomic: a concurrent start never plays half a file
    return path
