"""Tones as WAV files, made once with sox: ETSI ringback (425 Hz, 1 s on, 4 s off), the
voicemail beep (1 kHz for half a second) and the built-in hold music of queues (a soft
three-note chime)."""

from __future__ import annotations

import subprocess
from pathlib import Path

RINGBACK_ARGS = ["synth", "1", "sine", "425", "vol", "0.5", "pad", "0", "4"]
BEEP_ARGS = ["synth", "0.5", "sine", "1000", "vol", "0.5", "pad", "0", "0.1"]
# G4, B4, D5 plucked, then a pause: audible as "please hold", never mistaken for ringback.
HOLD_NOTES_HZ = (392, 494, 587)


class ToneError(Exception):
    pass


def make_ringback_tone(folder: Path) -> Path:
    """The ringback WAV (8 kHz mono 16-bit) callers hear while a phone rings; blocking."""
    return _make(folder / "ringback-425.wav", [["-n", *RINGBACK_ARGS]])


def make_beep_tone(folder: Path) -> Path:
    """The beep before a voicemail recording starts; blocking."""
    return _make(folder / "beep-1000.wav", [["-n", *BEEP_ARGS]])


def make_hold_music(folder: Path) -> Path:
    """The hold WAV queues loop when they have no hold music of their own; blocking."""
    notes = [["-n", "synth", "0.5", "pluck", str(hz), "vol", "0.6"] for hz in HOLD_NOTES_HZ]
    return _make(folder / "hold-chime.wav", notes, tail=["pad", "0", "2.5"])


def _make(path: Path, parts: list[list[str]], tail: list[str] | None = None) -> Path:
    """Render `parts` (sox inputs, played one after the other) to `path` once."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp.wav")
    inputs = [str(path.parent / f"{path.stem}.part{i}.wav") for i in range(len(parts))]
    try:
        for part, file in zip(parts, inputs, strict=True):
            _sox([*part[:1], "-r", "8000", "-c", "1", "-b", "16", file, *part[1:]])
        _sox([*inputs, str(partial), *(tail or [])])
    finally:
        for file in inputs:
            Path(file).unlink(missing_ok=True)
    partial.replace(path)  # atomic: a concurrent start never plays half a file
    return path


def _sox(args: list[str]) -> None:
    made = subprocess.run(["sox", *args], capture_output=True, text=True, check=False)
    if made.returncode != 0:
        raise ToneError(f"sox could not make a tone: {made.stderr.strip()}")
