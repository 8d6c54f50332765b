"""Structured logging set up once: console for people, JSON for log shippers."""

from __future__ import annotations

import logging
import sys

import structlog

from core.settings import LogSettings


def configure_logging(settings: LogSettings, *, cache_loggers: bool = True) -> None:
    """`cache_loggers`: bind each module's logger once, on first use (the service's hot
    paths); a short command has no need, and stays reconfigurable."""
    level = getattr(logging, settings.level.upper())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if settings.format == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=cache_loggers,
    )
    # Libraries that use the standard logging module (aiohttp, alembic) go to stderr too.
    logging.basicConfig(
        level=max(level, logging.INFO),
        stream=sys.stderr,
        format="%(levelname)s %(name)s %(message)s",
    )
