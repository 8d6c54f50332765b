"""The `pbx` command: run the whole service with its embedded defaults, migrate, render config;
provisioning commands for scripts in api.cli_admin."""

from __future__ import annotations

import asyncio
import gc
import signal
import sys
from pathlib import Path

import click
import structlog
from aiohttp import web

from api.app import create_app
from api.cli_admin import extensions_commands, users_commands
from api.cli_cluster import cluster_command
from api.cli_media import media_command
from api.cli_settings import command_settings, config_option
from api.routing import API_PREFIX, CONTEXT_KEY
from controller.lease import NodeInUse
from core.context import ServiceContext
from core.redis_server import ManagedRedis
from core.settings import Settings
from extensions.tokens import ensure_bootstrap_admin_token
from ivr.prompts import UnknownVoice, check_voice
from migrations import upgrade_database
from pbx.kamailio import KamailioProcess, render_kamailio_config

log = structlog.get_logger(__name__)


@click.group()
def main() -> None:
    """Self-hosted contact-center PBX."""


@main.command()
@config_option
def run(config: Path | None) -> None:
    """Migrate, start Redis, Kamailio and the service; Ctrl-C stops everything."""
    settings = command_settings(config)
    try:
        asyncio.run(check_voice(settings.prompts.voice))
        asyncio.run(_run(settings))
    except (_ChildDied, UnknownVoice, NodeInUse) as exc:
        raise click.ClickException(str(exc)) from exc


@main.command()
@click.option("--config", type=click.Path(path_type=Path))
def migrate(config: Path | None) -> None:
    """Bring the database to the newest schema."""
    settings = command_settings(config)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade_database(settings.database_url)
    click.echo("database is up to date")


main.add_command(cluster_command)
main.add_command(media_command)
main.add_command(users_commands)
main.add_command(extensions_commands)


@main.command("render-kamailio")
@click.option("--config", type=click.Path(path_type=Path))
def render_kamailio(config: Path | None) -> None:
    """Print the Kamailio configuration rendered from the settings."""
    settings = command_settings(config)
    kamailio_dir = settings.data_dir / "kamailio"
    click.echo(
        render_kamailio_config(settings, kamailio_dir / "run", kamailio_dir / "dispatcher.list")
    )


class _ChildDied(Exception):
    pass


async def _run(settings: Settings) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    log.info("migrating_database")
    await asyncio.to_thread(upgrade_database, settings.database_url)
    redis = None
    if settings.redis.managed:
        redis = ManagedRedis(settings.redis.host, settings.redis.port, settings.data_dir / "redis")
        log.info("starting_redis", port=settings.redis.port)
        await redis.start()
    kamailio = KamailioProcess(settings)
    runner = web.AppRunner(create_app(settings), access_log=None)
    try:
        log.info("starting_kamailio", port=settings.sip.port)
        await kamailio.start()
        await runner.setup()
        await web.TCPSite(runner, settings.api.host, settings.api.port).start()
        # What start-up loaded stays for the life of the process: out of the collector's
        # sight, a full collection scans only what came later (bench.chat: a 95 ms pause in
        # the middle of the posts, 6 ms after this).
        gc.freeze()
        token = await _admin_token(runner.app[CONTEXT_KEY], settings.data_dir / "admin-token")
        _print_banner(settings, token)
        await _wait_for_stop(kamailio, redis)
    finally:
        log.info("stopping")
        await runner.cleanup()
        await kamailio.stop()
        if redis is not None:
            await redis.stop()


async def _admin_token(ctx: ServiceContext, token_file: Path) -> str:
    """Tokens are stored hashed, so the printed one is kept in a 0600 file for the next run."""
    kept = await asyncio.to_thread(_read_token, token_file)
    token = await ensure_bootstrap_admin_token(ctx, kept)
    if token != kept:
        await asyncio.to_thread(_write_token, token_file, token)
    return token


def _read_token(token_file: Path) -> str | None:
    return token_file.read_text().strip() if token_file.exists() else None


def _write_token(token_file: Path, token: str) -> None:
    token_file.touch(mode=0o600)
    token_file.write_text(token + "\n")


async def _wait_for_stop(kamailio: KamailioProcess, redis: ManagedRedis | None) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    waits: dict[asyncio.Task[object], str] = {asyncio.create_task(stop.wait()): "signal"}
    waits[asyncio.create_task(kamailio.wait())] = "kamailio"
    if redis is not None:
        waits[asyncio.create_task(redis.wait())] = "redis-server"
    done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    which = waits[done.pop()]
    if which != "signal":
        # Running without the edge or the live state would accept work it cannot do.
        raise _ChildDied(f"{which} exited unexpectedly; stopping everything (see the log above)")


def _print_banner(settings: Settings, token: str) -> None:
    api = f"http://{settings.api.host}:{settings.api.port}"
    sip = settings.sip
    lines = [
        "",
        "PBX is running.",
        f"  Phones register at   sip:{sip.host}:{sip.port} (UDP/TCP), domain {sip.domain}",
        f"  Web console          {api}/",
        f"  REST API             {api}{API_PREFIX}  (OpenAPI: {api}{API_PREFIX}/openapi.json)",
        f"  Events (WebSocket)   ws://{settings.api.host}:{settings.api.port}{API_PREFIX}/events",
        f"  Metrics              {api}/metrics",
        f"  Admin token          {token}",
        f"                       (kept in {settings.data_dir / 'admin-token'})",
        "Press Ctrl-C to stop.",
        "",
    ]
    print("\n".join(lines), file=sys.stdout, flush=True)
