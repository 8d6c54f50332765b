"""Settings for a benchmark's own service: a fresh data folder, every port free on loopback."""

from __future__ import annotations

import tempfile
from pathlib import Path

from core.logging import configure_logging
from core.settings import LogSettings, Settings, load_settings
from tests.support.ports import free_port, free_port_block


def bench_settings(prefix: str, workers: int, **extra: str) -> Settings:
    """`extra`: more PBX_* variables, e.g. PBX_CALLS__INTER_DIGIT_TIMEOUT="1.0"."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    environ = {
        "PBX_DATA__DIR": str(folder / "data"),
        "PBX_REDIS__PORT": str(free_port()),
        "PBX_SIP__PORT": str(free_port()),
        "PBX_SIP__RPC_PORT": str(free_port()),
        "PBX_API__PORT": str(free_port()),
        "PBX_WORKERS__MAX_WORKERS": str(workers),
        "PBX_WORKERS__SPARE_LEGS": str(4 * workers),
        "PBX_WORKERS__FIRST_SIP_PORT": str(free_port_block(workers)),
        "PBX_WORKERS__FIRST_RTP_PORT": str(free_port_block(40 * workers)),
        # The benchmark's callers all come from one address.
        "PBX_SIP__MAX_REQUESTS_PER_2S": "100000",
        **extra,
    }
    config = folder / "config.toml"
    config.write_text("# every setting comes from PBX_* variables\n")
    settings = load_settings(config, environ)
    configure_logging(LogSettings(level="warning"))
    settings.data_dir.mkdir(parents=True)
    return settings
