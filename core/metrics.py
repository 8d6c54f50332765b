"""Prometheus metrics of the service, on one registry per application instance."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


class EdgeDrops(Collector):
    """Requests the SIP edge's guard dropped, by reason. Kamailio counts them; each scrape
    reads its counts first (`counts`), so they are not kept twice. None: the edge did not
    answer, and the metric has no samples (a counter that Kamailio restarted starts at 0)."""

    def __init__(self) -> None:
        self.counts: Mapping[str, int] | None = None

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "pbx_edge_dropped_requests",
            "SIP requests the edge dropped or refused, by reason: banned (after failed digest"
            " answers), phone_flood (over sip.max_requests_per_2s), trunk_limit (over"
            " trunk.max_requests_per_s, answered 503), no_worker (a call no media worker had"
            " room for, answered 503)",
            labels=["reason"],
        )
        for reason, count in (self.counts or {}).items():
            family.add_metric([reason], count)
        yield family


class RenamedCounts(Collector):
    """The gauge names two counters had before they were counters (`pbx_worker_restarts`,
    `pbx_media_timeouts`), kept because the README promised them: each reads its counter at
    the scrape, so no figure is copied. Without describe() the registry does not take their
    names for a clash with the counters' base names; in the text format /metrics serves
    (0.0.4) the counters' samples are named `..._total`, so the two never collide."""

    def __init__(self, counters: Mapping[str, Counter]) -> None:
        self._counters = dict(counters)

    def collect(self) -> Iterator[Metric]:
        for old_name, counter in self._counters.items():
            total = next(
                sample.value
                for family in counter.collect()
                for sample in family.samples
                if sample.name.endswith("_total")
            )
            yield GaugeMetricFamily(
                old_name, f"Deprecated: the value of {old_name}_total", value=total
            )


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.http_requests = Counter(
            "pbx_http_requests_total",
            "API requests by route template, method and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.http_duration = Histogram(
            "pbx_http_request_duration_seconds",
            "API request duration by route template",
            ["method", "route"],
            registry=self.registry,
        )
        self.events_published = Counter(
            "pbx_events_total",
            "Events persisted and published, by type",
            ["type"],
            registry=self.registry,
        )
        self.websocket_clients = Gauge(
            "pbx_event_stream_clients", "Open WebSocket event streams", registry=self.registry
        )
        self.sign_ins = Counter(
            "pbx_sign_ins_total",
            "Sign-in attempts to the web console by outcome: success, bad_credentials, locked",
            ["outcome"],
            registry=self.registry,
        )
        self.sign_in_locks = Counter(
            "pbx_sign_in_locks_total",
            "Locks after repeated failed sign-ins, by scope: email, address",
            ["scope"],
            registry=self.registry,
        )
        self.retention_deleted = Counter(
            "pbx_retention_deleted_rows_total",
            "History rows deleted because they outlived their retention period, by table",
            ["table"],
            registry=self.registry,
        )
        self.event_stream_clients_dropped = Counter(
            "pbx_event_stream_clients_dropped_total",
            "WebSocket event streams closed because the client fell too far behind",
            registry=self.registry,
        )
        self.registration_drop_failures = Counter(
            "pbx_registration_drop_failures_total",
            "Times the edge could not be told to drop a phone's registration",
            registry=self.registry,
        )
        self.extensions_assigned = Gauge(
            "pbx_extensions_assigned",
            "Extensions in use, by holder type",
            ["holder"],
            registry=self.registry,
        )
        self.calls = Counter(
            "pbx_calls_total",
            "Finished calls by direction and disposition",
            ["direction", "disposition"],
            registry=self.registry,
        )
        self.active_calls = Gauge(
            "pbx_active_calls",
            "Calls in progress by direction",
            ["direction"],
            registry=self.registry,
        )
        self.worker_legs_in_use = Gauge(
            "pbx_worker_legs_in_use",
            "Call legs in use across the media workers",
            registry=self.registry,
        )
        self.worker_legs_capacity = Gauge(
            "pbx_worker_legs_capacity",
            "Call legs the live media workers can hold",
            registry=self.registry,
        )
        self.workers_alive = Gauge(
            "pbx_workers_alive", "Media worker processes running", registry=self.registry
        )
        self.pool_workers = Gauge(
            "pbx_worker_pool_workers",
            "Media workers by state (starting, ready, retiring)",
            ["state"],
            registry=self.registry,
        )
        self.pool_max_workers = Gauge(
            "pbx_worker_pool_max_workers",
            "The most media workers the pool may run",
            registry=self.registry,
        )
        self.spare_legs = Gauge(
            "pbx_worker_spare_legs",
            "Legs callers can still take in the ready workers (two per caller)",
            registry=self.registry,
        )
        self.worker_start_seconds = Histogram(
            "pbx_worker_start_seconds",
            "From the fork request to the worker's hello",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=self.registry,
        )
        self.calls_refused = Counter(
            "pbx_calls_refused_total",
            "INVITEs a media worker refused before any call flow: worker_full (the edge tries"
            " the next worker), untrusted_source",
            ["reason"],
            registry=self.registry,
        )
        # Counted by the worker pool (pbx.pool) as each happens.
        self.worker_restarts = Counter(
            "pbx_worker_restarts_total",
            "Media workers that died unexpectedly (replaced as needed)",
            registry=self.registry,
        )
        self.media_hosts_linked = Gauge(
            "pbx_media_hosts_linked",
            "Media hosts (cluster.media_hosts) this controller is linked to now",
            registry=self.registry,
        )
        self.media_hosts_lost = Counter(
            "pbx_media_hosts_lost_total",
            "Links to media hosts that closed or went quiet (their workers' calls ended)",
            registry=self.registry,
        )
        self.shared_edge_updates = Counter(
            "pbx_shared_edge_updates_total",
            "The worker list shared between the nodes' edges (controller.shared_edge):"
            " 'published' by the active node ('refused' when a newer node had written it),"
            " 'applied' to a standby's edge, 'calls_ended' there for a dead worker",
            ["kind"],
            registry=self.registry,
        )
        self.calls_taken_over = Counter(
            "pbx_calls_taken_over_total",
            "Calls a lost controller left on a media host, taken over with their worker: "
            "'waiting' (back in their queue, in their place), 'talk' (a queue's talk, recorded "
            "to its end), 'bridged' (another talk, goes on), 'hung_up' (in a greeting or menu)",
            ["kind"],
            registry=self.registry,
        )
        self.dead_worker_calls_ended = Counter(
            "pbx_dead_worker_calls_ended_total",
            "Calls of media workers that died, ended by the edge for their far ends (BYE, or"
            " CANCEL to a ringing phone)",
            registry=self.registry,
        )
        self.media_timeouts = Counter(
            "pbx_media_timeouts_total",
            "Call legs hung up because their RTP stopped (workers.media_timeout)",
            registry=self.registry,
        )
        self.registry.register(
            RenamedCounts(
                {
                    "pbx_worker_restarts": self.worker_restarts,
                    "pbx_media_timeouts": self.media_timeouts,
                }
            )
        )
        self.trunk_registration = Gauge(
            "pbx_trunk_registration",
            "The trunk's registration at the provider: 1 for its current state",
            ["state"],
            registry=self.registry,
        )
        self.extension_dial_latency = Histogram(
            "pbx_extension_dial_latency_seconds",
            "From the digit that decided an extension to the INVITE towards its phone",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
            registry=self.registry,
        )
        self.presence_changes = Counter(
            "pbx_presence_changes_total",
            "Agent presence changes, by the status after the change",
            ["status"],
            registry=self.registry,
        )
        self.agents_by_status = Gauge(
            "pbx_agents",
            "Active users by presence status and activity",
            ["status", "activity"],
            registry=self.registry,
        )
        self.queue_waiting = Gauge(
            "pbx_queue_waiting_callers",
            "Callers waiting in each queue",
            ["queue"],
            registry=self.registry,
        )
        self.queue_longest_wait = Gauge(
            "pbx_queue_longest_wait_seconds",
            "How long the oldest caller of each queue waits",
            ["queue"],
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "pbx_queue_wait_seconds",
            "Seconds callers waited in a queue, by how their wait ended",
            ["queue", "outcome"],
            buckets=(1, 5, 10, 20, 30, 60, 120, 300, 600, 1800),
            registry=self.registry,
        )
        self.queue_calls = Counter(
            "pbx_queue_calls_total",
            "Queue callers by outcome: answered, abandoned, timeout, exit_key, overflow, full, "
            "no_agents, failed, callback_failed, callback_cancelled",
            ["queue", "outcome"],
            registry=self.registry,
        )
        self.call_recordings = Counter(
            "pbx_call_recordings_total",
            "Call recordings by result: completed, or failed (not started, or lost with a worker)",
            ["result"],
            registry=self.registry,
        )
        self.call_recording_seconds = Counter(
            "pbx_call_recording_seconds_total",
            "Seconds of completed call recordings",
            registry=self.registry,
        )
        self.call_transfers = Counter(
            "pbx_call_transfers_total",
            "Transfers phones asked for, by kind (blind, attended) and result: refused (the "
            "phone keeps its call), connected (the target took it), returned (back to who "
            "transferred), abandoned (the caller hung up first), failed",
            ["kind", "result"],
            registry=self.registry,
        )
        self.controller_active = Gauge(
            "pbx_controller_active",
            "1 while this node runs the controller (always, without [cluster] node; else while "
            "it holds the cluster's lease)",
            registry=self.registry,
        )
        self.callbacks = Counter(
            "pbx_callbacks_total",
            "Callback requests by outcome: requested (a waiting caller asked), completed (the "
            "customer talked to an agent), failed (every attempt failed), cancelled",
            ["outcome"],
            registry=self.registry,
        )
        self.callback_attempts = Counter(
            "pbx_callback_attempts_total",
            "Calls to customers who asked for a callback, by result (answered, no_answer, busy, "
            "unavailable, failed, agent_left, interrupted)",
            ["result"],
            registry=self.registry,
        )
        self.call_supervisions = Counter(
            "pbx_call_supervisions_total",
            "Supervisors who heard a live call, by the mode they began in (listen, whisper, barge)",
            ["mode"],
            registry=self.registry,
        )
        self.queue_priority_entries = Counter(
            "pbx_queue_priority_entries_total",
            "Callers who entered a queue with a priority above 0 (served ahead of the others)",
            ["queue"],
            registry=self.registry,
        )
        self.queue_answered_in_service_level = Counter(
            "pbx_queue_answered_within_service_level_total",
            "Queue calls answered within acd.service_level_seconds (divide by answered)",
            ["queue"],
            registry=self.registry,
        )
        self.acd_offers = Counter(
            "pbx_acd_offers_total",
            "Agent offers by result: answered, no_answer, withdrawn",
            ["result"],
            registry=self.registry,
        )
        # IVR (issue 5): menus, business hours, voicemail.
        self.menu_choices = Counter(
            "pbx_menu_choices_total",
            "What callers did in IVR menus: option, repeat, back, invalid, timeout, final",
            ["result"],
            registry=self.registry,
        )
        self.business_hours_checks = Counter(
            "pbx_business_hours_checks_total",
            "Calls to numbers with business hours, by open or closed at arrival",
            ["state"],
            registry=self.registry,
        )
        self.voicemail_messages = Counter(
            "pbx_voicemail_messages_total",
            "Voicemail recordings by outcome: saved, or discarded as too short",
            ["outcome"],
            registry=self.registry,
        )
        self.voicemail_message_seconds = Histogram(
            "pbx_voicemail_message_seconds",
            "Length of saved voicemail messages",
            buckets=(2, 5, 10, 20, 30, 60, 120, 300, 600),
            registry=self.registry,
        )
        self.voicemail_unheard = Gauge(
            "pbx_voicemail_unheard_messages",
            "Voicemail messages nobody has marked heard",
            registry=self.registry,
        )
        self.chat_messages = Counter(
            "pbx_chat_messages_total",
            "Chat messages by direction: in (from customers), out (replies and auto-replies)",
            ["direction"],
            registry=self.registry,
        )
        self.chat_dialogs = Counter(
            "pbx_chat_dialogs_total",
            "Chat dialog events: created, spam, assigned, reassigned, forwarded, closed, rated",
            ["event"],
            registry=self.registry,
        )
        self.chat_assignment = Histogram(
            "pbx_chat_assignment_seconds",
            "From a dialog entering its channel's queue to its assignment",
            buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 5, 30, 120, 600),
            registry=self.registry,
        )
        self.chat_deliveries = Counter(
            "pbx_chat_deliveries_total",
            "Attempts to deliver replies to a channel's URL, by result: delivered, failed",
            ["result"],
            registry=self.registry,
        )
        # The edge's guard (Kamailio counts; the /metrics handler reads them per scrape).
        self.edge_drops = EdgeDrops()
        self.registry.register(self.edge_drops)
        # The write-behind writer of call records and queue-log rows (core.write_behind).
        self.write_behind_pending = Gauge(
            "pbx_write_behind_pending_rows",
            "Row changes journaled but not yet committed to SQL",
            registry=self.registry,
        )
        self.write_behind_rows = Counter(
            "pbx_write_behind_rows_total",
            "Row changes committed by the write-behind writer, by kind",
            ["kind"],
            registry=self.registry,
        )
        self.write_behind_flush = Histogram(
            "pbx_write_behind_flush_seconds",
            "Duration of one write-behind batch transaction (successful commits)",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0),
            registry=self.registry,
        )
        self.write_behind_failures = Counter(
            "pbx_write_behind_commit_failures_total",
            "Write-behind batch commits that failed and were retried",
            registry=self.registry,
        )
