"""The pool counts worker deaths and dead media as they happen, as Prometheus counters
(`..._total`), on the in-memory worker twin; the old gauge names read the same counts."""

from __future__ import annotations

import asyncio

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from core.metrics import Metrics
from core.settings import WorkerSettings
from pbx.legs import Leg
from pbx.memory_worker import MemoryWorkers
from pbx.pool import WorkerPool


def sample(metrics: Metrics, name: str) -> float | None:
    return metrics.registry.get_sample_value(name)


async def test_dead_media_and_a_lost_worker_count_once_each_when_they_happen() -> None:
    metrics = Metrics()
    twin = MemoryWorkers(prompt_seconds=0.0)
    inbound: asyncio.Queue[Leg] = asyncio.Queue()
    pool = WorkerPool(
        WorkerSettings(max_workers=2, spare_legs=4), trusted=[], on_inbound=inbound.put,
        edge=twin.edge, launcher=twin, metrics=metrics,
    )  # fmt: skip
    await pool.start()
    try:
        assert sample(metrics, "pbx_worker_restarts_total") == 0
        assert sample(metrics, "pbx_media_timeouts_total") == 0
        caller = twin.call_in("4930777", "4930700")
        leg = await inbound.get()
        await leg.answer()
        caller.lose_media()
        await asyncio.wait_for(leg.ended, 1)
        assert sample(metrics, "pbx_media_timeouts_total") == 1

        await pool.kill_worker_for_test(pool.workers[0].id)
        await twin.until(lambda: pool.restarts == 1)
        assert sample(metrics, "pbx_worker_restarts_total") == 1
    finally:
        await pool.stop()
    # Stopping the pool's workers is no restart.
    assert sample(metrics, "pbx_worker_restarts_total") == 1
    # The names the README promised before they were counters: the same figures.
    assert sample(metrics, "pbx_worker_restarts") == 1
    assert sample(metrics, "pbx_media_timeouts") == 1


def test_the_exposition_holds_the_counters_and_the_old_gauge_names_side_by_side() -> None:
    metrics = Metrics()
    metrics.worker_restarts.inc(2)
    text = generate_latest(metrics.registry).decode()
    # Series as Prometheus scrapes them (text format 0.0.4): (type, sample name) -> value.
    series = {
        (family.type, sample.name): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert series[("counter", "pbx_worker_restarts_total")] == 2
    assert series[("gauge", "pbx_worker_restarts")] == 2
    assert series[("counter", "pbx_media_timeouts_total")] == 0
    assert series[("gauge", "pbx_media_timeouts")] == 0
