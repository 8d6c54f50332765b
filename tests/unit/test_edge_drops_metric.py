from prometheus_client import generate_latest

from core.metrics import Metrics


def _drop_lines(metrics: Metrics) -> list[str]:
    text = generate_latest(metrics.registry).decode()
    return [line for line in text.splitlines() if line.startswith("pbx_edge_dropped_requests")]


def test_edge_drops_show_the_counts_the_edge_reported() -> None:
    metrics = Metrics()
    metrics.edge_drops.counts = {"banned": 2, "phone_flood": 0, "trunk_limit": 7}
    assert _drop_lines(metrics) == [
        'pbx_edge_dropped_requests_total{reason="banned"} 2.0',
        'pbx_edge_dropped_requests_total{reason="phone_flood"} 0.0',
        'pbx_edge_dropped_requests_total{reason="trunk_limit"} 7.0',
    ]


def test_edge_drops_have_no_samples_while_the_edge_does_not_answer() -> None:
    # Not zeros: a counter falling to 0 and back would read as a reset and a burst.
    assert _drop_lines(Metrics()) == []
