"""Settings for a `pbx` command: loaded once, with logging set up from them (to stderr)."""

from __future__ import annotations

from pathlib import Path

import click

from core.logging import configure_logging
from core.settings import Settings, SettingsError, load_settings


def command_settings(config: Path | None) -> Settings:
    try:
        settings = load_settings(config)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from exc
    configure_logging(settings.log, cache_loggers=False)
    return settings


config_option = click.option(
    "--config",
    type=click.Path(path_type=Path),
    help="config.toml (default: $PBX_CONFIG or ./config.toml)",
)
