"""Call-progress tones as WAV files, made once with sox (ETSI ringback: 425 Hz, 1 s on, 4 s off)."""

from __future__ import annotations

import subprocess
from pathlib import Path

RINGBACK_ARGS = ["synth", "1", "sine", "425", "vol", "0.5", "pad", "0", "4"]


class ToneError(Exception):
    pass


def make_ringback_tone(folder: Path) -> Path:
    """The ringback WAV (8 kHz mono 16-bit) callers hear while a phone rings; blocking."""
    path = folder / "ringback-425.wav"
    if path.exists():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp.wav")
    made = subprocess.run(
        ["sox", "-n", "-r", "8000", "-c", "1", "-b", "16", str(partial), *RINGBACK_ARGS],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if made.returncode != 0:
        raise ToneError(f"sox could not make the ringback tone: {made.stderr.strip()}")
    partial.replace(path)  # atomic: a concurrent start never plays half a file
    return path
