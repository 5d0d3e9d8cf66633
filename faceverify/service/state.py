"""What the app holds for its lifetime (model, gallery, queue) and the dependencies that hand
them to routes."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Annotated

import anyio
from fastapi import Depends, Request

from ..gallery import Gallery, PCAProjection
from ..verify import Verifier
from .batching import InferenceQueue
from ..errors import NotReadyError
from .metrics import Metrics
from .settings import Settings

log = logging.getLogger("faceverify.service")


def load_verifier(settings: Settings) -> Verifier:
    return Verifier.from_model(settings.model, flip=settings.flip, device=settings.device, runtime=settings.runtime,
                               threads=settings.torch_threads)


def open_gallery(settings: Settings, verifier: Verifier) -> Gallery:
    pca = PCAProjection.load(settings.pca) if settings.pca else None
    return Gallery(settings.gallery_location, verifier.dim, verifier.fingerprint, flat_max=settings.flat_max,
                   nprobe=settings.nprobe, pca=pca)


def open_model_and_gallery(settings: Settings, verifier: Verifier | None = None,
                           gallery: Gallery | None = None) -> tuple[Verifier, Gallery]:
    """Load the model and open the gallery, unless given; the model's threads are set in between
    (torch is only there, after the load, if its runtime was chosen)."""
    verifier = verifier or load_verifier(settings)
    if settings.torch_threads:
        from ..threads import apply_threads

        apply_threads(settings.torch_threads)
    return verifier, gallery or open_gallery(settings, verifier)


@dataclass
class Service:
    settings: Settings
    metrics: Metrics
    verifier: Verifier | None = None
    gallery: Gallery | None = None
    queue: InferenceQueue | None = None
    decode_limiter: anyio.CapacityLimiter | None = None
    problems: list[str] = field(default_factory=list)

    def open(self, verifier: Verifier | None = None, gallery: Gallery | None = None) -> None:
        """Load the model once and open the gallery (or adopt the given ones)."""
        s = self.settings
        self.verifier, self.gallery = open_model_and_gallery(s, verifier, gallery)
        self.queue = InferenceQueue(self.verifier, self.metrics, s.max_batch, s.batch_wait_ms, s.max_queue)
        self.queue.start()
        self.metrics.ready.set(1)

    def close(self) -> None:
        self.metrics.ready.set(0)
        if self.queue is not None:
            self.queue.stop()
        if self.gallery is not None:
            self.gallery.close()

    def readiness(self) -> list[str]:
        problems = list(self.problems)
        if self.verifier is None:
            problems.append("model not loaded")
        if self.gallery is None or self.gallery.closed:
            problems.append("gallery not open")
        if self.queue is None or not self.queue._thread.is_alive():
            problems.append("inference worker not running")
        return problems

    def ready(self) -> bool:
        return not self.readiness()


def get_service(request: Request) -> Service:
    service: Service = request.app.state.service
    problems = service.readiness()
    if problems:
        raise NotReadyError(f"the service is not ready ({'; '.join(problems)}); retry shortly.", retry_after=2.0)
    return service


ServiceDep = Annotated[Service, Depends(get_service)]
