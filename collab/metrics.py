"""Metrics: what an operator graphs and alerts on, served at /metrics in Prometheus' text
format by prometheus-client (its registry, one per server, and its exposition).

The parts count into plain attributes of one `Metrics` object, and one collector turns
them into metric families when Prometheus scrapes. A frame's path only adds to an int:
a prometheus-client `Counter.inc` costs 1.5 us here, a labelled one 6 us, and a fan-out
to 50 readers counts 50 frames. Every name starts with collab_; no label takes a value
per document or per client (close codes a client may choose are folded into "other").

`METRICS` lists every metric once, with its type and help: the collector, the docs'
table (docs/operations.md) and the tests read it.
"""

from __future__ import annotations

import asyncio
import logging
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from collab.errors import CollabError

log = logging.getLogger(__name__)

Kind = Literal["counter", "gauge", "histogram"]

# Seconds: from a fast commit (tens of us) to a stalled store (retries up to 5 s).
_SECONDS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
            0.5, 1.0, 2.5, 5.0, 10.0)  # fmt: skip
_LAG = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_COUNTS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_BYTES = (64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216)
LOOP_TICK_SECONDS = 0.25


def _close_codes() -> frozenset[int]:
    """Close codes worth a series of their own: the protocol's (1000-1015) and collab's
    errors'; any other a client may send is counted as "other"."""
    codes, classes = set(range(1000, 1016)), [CollabError]
    while classes:
        error = classes.pop()
        codes.add(error.close_code)
        classes += error.__subclasses__()
    return frozenset(codes)


_CLOSE_CODES = _close_codes()


@dataclass(frozen=True)
class Spec:
    name: str  # without collab_ (and without _total: prometheus-client adds it)
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    cluster: bool = False  # only with --redis

    @property
    def exported(self) -> str:
        """Its name in a scrape and in the docs (a counter's ends in _total)."""
        return f"collab_{self.name}" + ("_total" if self.kind == "counter" else "")


METRICS: tuple[Spec, ...] = (
    Spec("connections_open", "gauge", "WebSocket connections open now."),
    Spec("connections_opened", "counter", "WebSocket connections accepted."),
    Spec("connections_closed", "counter", "WebSocket connections ended, by close code.", ("code",)),
    Spec(
        "upgrades_refused",
        "counter",
        "WebSocket upgrades refused before opening, by HTTP status and reason.",
        ("status", "reason"),
    ),
    Spec("rooms_loaded", "gauge", "Documents loaded in memory now."),
    Spec("room_loads", "counter", "Documents loaded from the database."),
    Spec("room_unloads", "counter", "Documents unloaded (saved and freed)."),
    Spec("room_load_seconds", "histogram", "Time to load a document from the database."),
    Spec("updates_received", "counter", "Document updates received from clients."),
    Spec("updates_applied", "counter", "Client updates that changed a document."),
    Spec(
        "updates_refused",
        "counter",
        "Client updates refused, by reason (read_only, quota, invalid).",
        ("reason",),
    ),
    Spec("updates_relayed", "counter", "Update messages sent to clients."),
    Spec("received_bytes", "counter", "Bytes of WebSocket messages received from clients."),
    Spec("sent_bytes", "counter", "Bytes of messages sent (or queued) to clients."),
    Spec("commit_updates", "histogram", "Updates per commit (a group commit of every room)."),
    Spec("commit_seconds", "histogram", "Time of one commit to the database."),
    Spec("commit_retries", "counter", "Commits that failed and were tried again."),
    Spec(
        "store_errors",
        "counter",
        "Database operations that failed, by operation (commit, read, version).",
        ("operation",),
    ),
    Spec("sync_answers", "counter", "Sync answers (SyncStep2) sent to clients."),
    Spec("sync_answer_bytes", "histogram", "Size of a sync answer."),
    Spec("awareness_received", "counter", "Awareness messages received from clients."),
    Spec("awareness_sent", "counter", "Awareness messages sent to clients."),
    Spec("slow_consumers_closed", "counter", "Clients closed for not reading (1013)."),
    Spec("outbox_bytes", "gauge", "Bytes queued for clients and not yet written."),
    Spec("versions", "counter", "Versions taken, by kind (auto, named, pre-restore).", ("kind",)),
    Spec("version_seconds", "histogram", "Time to take and store one version."),
    Spec("retention_runs", "counter", "Runs of the retention job."),
    Spec("retention_failures", "counter", "Runs of the retention job that failed."),
    Spec("retention_deleted_versions", "counter", "Versions the retention job deleted."),
    Spec(
        "event_loop_lag_seconds",
        "histogram",
        f"How late a tick scheduled every {LOOP_TICK_SECONDS} s ran: time the loop was busy.",
    ),
    Spec(
        "hook_calls",
        "counter",
        "Calls of the app's hooks, by hook and result (ok, error, timeout).",
        ("hook", "result"),
    ),
    Spec(
        "hook_dropped",
        "counter",
        "Hook calls dropped because the hook fell too far behind, by hook.",
        ("hook",),
    ),
    Spec(
        "webhook_deliveries",
        "counter",
        "Webhook deliveries tried, by result (delivered, failed: tried again later).",
        ("result",),
    ),
    Spec(
        "webhook_give_ups",
        "counter",
        "Webhook events dropped undelivered, by reason (age: past --webhook-give-up-seconds, "
        "gone: the endpoint answered 410).",
        ("reason",),
    ),
    Spec("webhook_outbox_depth", "gauge", "Webhook deliveries waiting in the outbox."),
    Spec(
        "webhook_outbox_oldest_seconds",
        "gauge",
        "Age of the oldest webhook delivery waiting (0: none).",
    ),
    Spec("bus_connected", "gauge", "1 while the Redis relay is connected.", cluster=True),
    Spec(
        "bus_reconnects", "counter", "Times the Redis relay was lost and made again.", cluster=True
    ),
    Spec("bus_published", "counter", "Messages published to other servers.", cluster=True),
    Spec(
        "bus_updates_received",
        "counter",
        "Committed updates received from other servers.",
        cluster=True,
    ),
    Spec(
        "bus_relay_seconds",
        "histogram",
        "Redis relay lag: a heartbeat's time from publishing to its coming back.",
        cluster=True,
    ),
    Spec(
        "catch_ups",
        "counter",
        "Reads of a document's log from the database for what the relay did not bring.",
        cluster=True,
    ),
    Spec("catch_up_updates", "counter", "Updates those reads brought.", cluster=True),
    Spec(
        "presence_dropped",
        "counter",
        "Awareness states removed because their server is gone or went silent.",
        cluster=True,
    ),
)
# What prometheus-client's process collector adds (resident memory, CPU, open files).
PROCESS_METRICS = (
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_cpu_seconds",
    "process_open_fds",
    "process_max_fds",
    "process_start_time_seconds",
)


class Buckets:
    """A histogram's counts, kept as plain numbers: observing costs a bisect."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, float]]:
        found: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            found.append(("+Inf" if bound == float("inf") else repr(float(bound)), running))
        return found


class Metrics:
    """Every count a server keeps. Attributes are added to directly by the parts."""

    def __init__(self) -> None:
        self.connections_open = 0
        self.connections_opened = 0
        self.connections_closed: Counter[str] = Counter()
        self.upgrades_refused: Counter[tuple[str, str]] = Counter()
        self.room_loads = 0
        self.room_unloads = 0
        self.room_load_seconds = Buckets(_SECONDS)
        self.updates_received = 0
        self.updates_applied = 0
        self.updates_refused: Counter[str] = Counter()
        self.updates_relayed = 0
        self.received_bytes = 0
        self.sent_bytes = 0
        self.commit_updates = Buckets(_COUNTS)
        self.commit_seconds = Buckets(_SECONDS)
        self.commit_retries = 0
        self.store_errors: Counter[str] = Counter()
        self.sync_answers = 0
        self.sync_answer_bytes = Buckets(_BYTES)
        self.awareness_received = 0
        self.awareness_sent = 0
        self.slow_consumers_closed = 0
        self.versions: Counter[str] = Counter()
        self.version_seconds = Buckets(_SECONDS)
        self.retention_runs = 0
        self.retention_failures = 0
        self.retention_deleted_versions = 0
        self.event_loop_lag_seconds = Buckets(_LAG)
        self.hook_calls: Counter[tuple[str, str]] = Counter()
        self.hook_dropped: Counter[str] = Counter()
        self.webhook_deliveries: Counter[str] = Counter()
        self.webhook_give_ups: Counter[str] = Counter()
        self.bus_reconnects = 0
        self.bus_published = 0
        self.bus_updates_received = 0
        self.bus_relay_seconds = Buckets(_SECONDS)
        self.catch_ups = 0
        self.catch_up_updates = 0
        self.presence_dropped = 0
        # What is read when scraped, from the parts that know it (set as they start).
        self.rooms_loaded: Callable[[], int] = lambda: 0
        self.outbox_bytes: Callable[[], int] = lambda: 0
        # As the webhooks' sender last read them (the outbox is in the database).
        self.webhook_outbox_depth: Callable[[], int] = lambda: 0
        self.webhook_outbox_oldest_seconds: Callable[[], float] = lambda: 0.0
        self.bus_connected: Callable[[], bool] | None = None  # None: not a cluster

    def closed(self, code: int) -> None:
        self.connections_closed[str(code) if code in _CLOSE_CODES else "other"] += 1

    def registry(self) -> CollectorRegistry:
        """A registry of these counts and of the process (memory, CPU, open files)."""
        registry = CollectorRegistry(auto_describe=True)
        registry.register(_Collector(self))
        ProcessCollector(namespace="collab", registry=registry)
        return registry

    async def tick_forever(self) -> None:
        """Measure the event loop's lag: how late a periodic tick runs."""
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + LOOP_TICK_SECONDS
            await asyncio.sleep(LOOP_TICK_SECONDS)
            self.event_loop_lag_seconds.observe(max(0.0, loop.time() - due))


class _Collector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        metrics = self._metrics
        cluster = metrics.bus_connected is not None
        for spec in METRICS:
            if spec.cluster and not cluster:
                continue
            yield _family(spec, _value(metrics, spec))


def _value(metrics: Metrics, spec: Spec) -> object:
    value = getattr(metrics, spec.name)
    if callable(value):
        return float(value())
    return value


def _family(spec: Spec, value: object) -> Metric:
    name = "collab_" + spec.name
    if isinstance(value, Buckets):
        histogram = HistogramMetricFamily(name, spec.help)
        histogram.add_metric([], value.cumulative(), value.sum)
        return histogram
    family: CounterMetricFamily | GaugeMetricFamily
    if spec.kind == "counter":
        family = CounterMetricFamily(name, spec.help, labels=spec.labels)
    else:
        family = GaugeMetricFamily(name, spec.help, labels=spec.labels)
    if isinstance(value, Counter):
        for key, count in sorted(value.items()):
            family.add_metric(list(key) if isinstance(key, tuple) else [key], count)
    else:
        assert isinstance(value, int | float)
        family.add_metric([], value)
    return family
