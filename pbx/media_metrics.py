"""A media host's own metrics (`pbx media`), on its own registry and its own HTTP listener
(`[media] metrics_host`/`metrics_port`): the nodes' /metrics cannot see refused links or
detached workers, which only the host knows."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)


class MediaHostMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.linked = Gauge(
            "pbx_media_host_linked", "1 while a controller is linked to this media host",
            registry=self.registry,
        )  # fmt: skip
        self.links = Counter(
            "pbx_media_host_links_total",
            "Controllers that proved themselves and were linked (one more per takeover)",
            registry=self.registry,
        )
        self.refused = Counter(
            "pbx_media_host_refused_total",
            "Link connections refused: 'busy' (too many handshakes at once), 'proof' (not the"
            " cluster's secret, or not the link's protocol), 'past_controller' (an older term"
            " than the linked one), 'handshake' (cut or silent while proving itself)",
            ["reason"],
            registry=self.registry,
        )
        self.workers = Gauge(
            "pbx_media_host_workers",
            "Worker processes: 'linked' (the linked controller's), 'detached' (a lost"
            " controller's, finishing their bridged calls)",
            ["state"],
            registry=self.registry,
        )
        self.worker_start_failures = Counter(
            "pbx_media_host_worker_start_failures_total",
            "Workers the controller asked for that could not be started here",
            registry=self.registry,
        )


async def serve_metrics(metrics: MediaHostMetrics, host: str, port: int) -> web.AppRunner:
    """GET /metrics on host:port until the returned runner's cleanup()."""

    async def scrape(request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner
