"""`pbx media`: run this machine as a media host of a cluster (pbx.media_host)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import click
import structlog
from aiohttp import web

from api.cli_settings import command_settings, config_option
from core.settings import MIN_CLUSTER_SECRET, Settings
from pbx.media_host import MediaHost
from pbx.media_metrics import serve_metrics

log = structlog.get_logger(__name__)


@click.command("media")
@config_option
def media_command(config: Path | None) -> None:
    """Run media workers for the cluster's active controller; Ctrl-C stops them."""
    settings = command_settings(config)
    if len(settings.cluster.secret) < MIN_CLUSTER_SECRET:
        raise click.ClickException(f"a media host needs cluster.secret (at least "
                                   f"{MIN_CLUSTER_SECRET} characters, the nodes' own)")  # fmt: skip
    asyncio.run(_serve(settings))


async def _serve(settings: Settings) -> None:
    host = MediaHost(settings)
    media = settings.media
    try:
        await host.start()
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {settings.workers.host}:"
                                   f"{media.port}: {exc}") from exc  # fmt: skip
    metrics: web.AppRunner | None = None
    if media.metrics_port:
        try:
            metrics = await serve_metrics(host.metrics, media.metrics_host, media.metrics_port)
        except OSError as exc:
            await host.stop()
            raise click.ClickException(f"cannot serve metrics on {media.metrics_host}:"
                                       f"{media.metrics_port}: {exc}") from exc  # fmt: skip
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        if metrics is not None:
            await metrics.cleanup()
        await host.stop()
