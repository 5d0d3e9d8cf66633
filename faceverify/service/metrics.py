"""Prometheus metrics (one registry per app, so several apps can live in one process)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST  # noqa: F401  (re-exported for the /metrics route)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("faceverify_requests_total", "HTTP requests by route template, method and status",
                                ["route", "method", "status"], registry=r)
        self.latency = Histogram("faceverify_request_duration_seconds", "HTTP request latency by route template",
                                 ["route", "method"], buckets=LATENCY_BUCKETS, registry=r)
        self.inference = Histogram("faceverify_inference_seconds", "detection + embedding time per micro-batch",
                                   buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("faceverify_inference_batch_images", "images per micro-batch",
                                    buckets=(1, 2, 4, 8, 16, 32, 64), registry=r)
        self.queue_depth = Gauge("faceverify_queue_depth", "inference jobs waiting", registry=r)
        self.rejected = Counter("faceverify_rejected_total", "requests refused before inference", ["reason"], registry=r)
        self.gallery_faces = Gauge("faceverify_gallery_faces", "faces in the gallery index", registry=r)
        self.gallery_collections = Gauge("faceverify_gallery_collections", "collections in the gallery", registry=r)
        self.ready = Gauge("faceverify_ready", "1 when the model and the gallery are loaded", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Pure ASGI middleware: counts and times every HTTP request by its route *template*
    (``/collections/{collection}``), never the raw path, so label cardinality stays bounded."""

    def __init__(self, app, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = {"code": 500}
        start = time.perf_counter()

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or ("/static" if scope.get("path", "").startswith("/demo") else "unmatched")
            method = scope.get("faceverify.method") or scope.get("method", "")  # HEAD runs as GET inside
            self.metrics.requests.labels(template, method, str(status["code"])).inc()
            self.metrics.latency.labels(template, method).observe(time.perf_counter() - start)
