"""The Prometheus metrics of /metrics, in a registry of their own (two apps in one process do not share them)."""

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

ROUTES = ("/v1/embeddings", "/embed", "/tokenize", "/similarity", "/rerank", "/v1/models", "/health", "/metrics")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        self.registry = r = CollectorRegistry()
        self.requests = Counter("npminilm_requests", "HTTP requests by route and status code.", ["route", "status"],
                                registry=r)
        self.latency = Histogram("npminilm_request_duration_seconds", "Time from request to response, by route.",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.inputs = Counter("npminilm_inputs", "Texts embedded.", registry=r)
        self.tokens = Counter("npminilm_tokens", "Tokens embedded, [CLS] and [SEP] included.", registry=r)
        self.batch_inputs = Histogram("npminilm_batch_inputs", "Texts per batch.", registry=r,
                                      buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048))
        self.batch_tokens = Histogram("npminilm_batch_tokens", "Tokens per batch.", registry=r,
                                      buckets=(16, 64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536))
        self.queue_texts = Gauge("npminilm_queue_depth", "Texts waiting for a batch.", registry=r)
        self.queue_requests = Gauge("npminilm_queue_requests", "Requests admitted and not yet answered.",
                                    registry=r)

    def watch(self, batcher):
        """Read the queue gauges from `batcher` at each scrape."""
        self.queue_texts.set_function(lambda: batcher.waiting_texts)
        self.queue_requests.set_function(lambda: batcher.unanswered)

    def on_batch(self, n_texts, n_tokens):
        self.batch_inputs.observe(n_texts)
        self.batch_tokens.observe(n_tokens)
        self.inputs.inc(n_texts)
        self.tokens.inc(n_tokens)

    def observe(self, path, status, seconds):
        route = path if path in ROUTES else "other"  # unknown paths share one label: no unbounded label set
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def render(self):
        return generate_latest(self.registry)
