"""Prometheus metrics: jobs by status, queues, agents, restarts, latencies.

A registry of our own (no module-level state); gauges are read from the live
objects when scraped, so nothing has to keep them in step.
"""

import collections

import prometheus_client
from prometheus_client.core import GaugeMetricFamily, CounterMetricFamily


class Metrics:
    def __init__(self, sims, resources, agents, runs, store, hub):
        """
        Args:
            sims (sim_store.SimStore): every simulation
        """
        self.registry = prometheus_client.CollectorRegistry()
        self.request_secs = prometheus_client.Histogram(
            "simvisor_http_request_seconds",
            "HTTP request latency",
            ["method", "status"],
            registry=self.registry,
            buckets=(
                0.001,
                0.0025,
                0.005,
                0.01,
                0.025,
                0.05,
                0.1,
                0.25,
                0.5,
                1,
                2.5,
                10,
            ),
        )
        self.registry.register(_Collector(sims, resources, agents, runs, store, hub))

    def observe_request(self, method, status, secs):
        self.request_secs.labels(method, str(status)).observe(secs)

    def render(self):
        return prometheus_client.generate_latest(self.registry)


class _Collector:
    def __init__(self, sims, resources, agents, runs, store, hub):
        self._sims = sims
        self._resources = resources
        self._agents = agents
        self._runs = runs
        self._store = store
        self._hub = hub

    def collect(self):
        j = GaugeMetricFamily("simvisor_jobs", "jobs by status", labels=["status"])
        c = collections.Counter(s.job.status for s in self._sims.by_id.values())
        for k in sorted(c):
            j.add_metric([k], c[k])
        yield j
        q = GaugeMetricFamily(
            "simvisor_queue_length", "queued runs by user", labels=["user"]
        )
        for u, n in sorted(self._resources.queue_lengths().items()):
            q.add_metric([u], n)
        yield q
        a = GaugeMetricFamily("simvisor_agents", "agents by state", labels=["state"])
        c = collections.Counter(x.state for x in self._agents.all())
        for k in sorted(c):
            a.add_metric([k], c[k])
        yield a
        h = GaugeMetricFamily(
            "simvisor_cores_used", "cores in use by host", labels=["host"]
        )
        for t in self._resources.targets.values():
            h.add_metric([t.name], t.used)
        yield h
        yield CounterMetricFamily(
            "simvisor_dispatch_restarts",
            "dispatch restarts after Awaited",
            value=self._runs.restarts,
        )
        yield CounterMetricFamily(
            "simvisor_store_writes", "durable document writes", value=self._store.writes
        )
        yield CounterMetricFamily(
            "simvisor_store_commits",
            "journal appends (each one fsync for a batch of document writes)",
            value=self._store.commits,
        )
        yield CounterMetricFamily(
            "simvisor_store_write_seconds",
            "time the store's writer spent writing (commits and checkpoints)",
            value=self._store.write_secs,
        )
        yield CounterMetricFamily(
            "simvisor_library_staged_bytes",
            "library file bytes sent to agents that fetch them (sbatch)",
            value=self._runs.staging_files.sent_bytes,
        )
        yield CounterMetricFamily(
            "simvisor_store_write_failures",
            "document writes that failed (retried until they land)",
            value=self._store.failures,
        )
        yield GaugeMetricFamily(
            "simvisor_store_dirty_documents",
            "documents whose newest content is not on disk yet",
            value=self._store.dirty(),
        )
        yield GaugeMetricFamily(
            "simvisor_event_subscribers",
            "open /api/events connections",
            value=self._hub.count(),
        )
