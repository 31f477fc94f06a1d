"""Prometheus metrics, one registry per application (no process-global registry)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.messages_received = Counter(
            "job_doctor_messages_received_total", "Messages accepted from a channel", ["channel"], registry=r
        )
        self.messages_rejected = Counter(
            "job_doctor_messages_rejected_total",
            "Callbacks rejected (auth, size, format)",
            ["channel", "reason"],
            registry=r,
        )
        self.duplicates = Counter(
            "job_doctor_duplicates_total", "Duplicate deliveries dropped", ["channel"], registry=r
        )
        self.jobs_queued = Counter("job_doctor_jobs_queued_total", "Analysis jobs enqueued", registry=r)
        self.jobs_running = Gauge("job_doctor_jobs_running", "Analysis jobs in progress", registry=r)
        self.jobs_done = Counter(
            "job_doctor_jobs_done_total", "Analysis jobs finished", ["outcome"], registry=r
        )  # outcome: ok | failed | retried
        self.queue_depth = Gauge("job_doctor_queue_depth", "Jobs waiting in the queue", registry=r)
        self.inbox_depth = Gauge(
            "job_doctor_inbox_depth",
            "Accepted messages not processed yet (callbacks refused at the cap)",
            registry=r,
        )
        self.dead_letters = Counter(
            "job_doctor_dead_letters_total",
            "Entries and deliveries given up on, moved to the dead-letter stream",
            ["queue", "reason"],
            registry=r,
        )  # reason: delivery (one requester, after max attempts) | attempts (the entry kept failing)
        self.dead_letter_depth = Gauge(
            "job_doctor_dead_letter_depth", "Entries in the dead-letter stream (all replicas)", registry=r
        )
        self.analysis_seconds = Histogram(
            "job_doctor_analysis_seconds",
            "Time from job start to report",
            ["source"],
            buckets=(0.5, 1, 2, 5, 10, 20, 30, 45, 60, 90, 120, 300),
            registry=r,
        )
        self.bklog_queries = Counter(
            "job_doctor_bklog_queries_total", "BkLog searches", ["outcome"], registry=r
        )
        self.llm_calls = Counter("job_doctor_llm_calls_total", "Model calls", ["outcome"], registry=r)
        self.llm_tokens = Counter("job_doctor_llm_tokens_total", "Model tokens", ["kind"], registry=r)
        self.llm_fallbacks = Counter(
            "job_doctor_llm_fallbacks_total", "Analyses that fell back to rules", ["reason"], registry=r
        )
        self.sends = Counter("job_doctor_sends_total", "Message parts sent", ["channel"], registry=r)
        self.send_failures = Counter(
            "job_doctor_send_failures_total", "Message sends that failed", ["channel"], registry=r
        )
        self.ready = Gauge("job_doctor_dependency_up", "Dependency state from /readyz", ["name"], registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
