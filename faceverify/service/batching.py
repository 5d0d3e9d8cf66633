"""Micro-batching inference queue: one worker thread owns the model; concurrent requests' images
are detected and embedded together, and the queue is bounded so overload becomes an immediate
503 ``overloaded`` with ``Retry-After`` instead of unbounded latency."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import FaceverifyError, OverloadedError
from ..verify import FaceResult, Verifier
from .metrics import Metrics

log = logging.getLogger("faceverify.service")


@dataclass
class _Job:
    images: list[np.ndarray]
    policies: list[str]
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    enqueued: float = field(default_factory=time.perf_counter)


@dataclass
class InferenceResult:
    faces: list[FaceResult | FaceverifyError]
    queue_ms: float
    inference_ms: float
    batch_images: int


class InferenceQueue:
    def __init__(self, verifier: Verifier, metrics: Metrics, max_batch: int = 16, batch_wait_ms: float = 5.0, max_queue: int = 64):
        self.verifier = verifier
        self.metrics = metrics
        self.max_batch = max_batch
        self.batch_wait = batch_wait_ms / 1000.0
        self.max_queue = max_queue
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._pending = 0
        self._lock = threading.Lock()
        self._batch_seconds = 0.1  # running estimate, for Retry-After
        self._thread = threading.Thread(target=self._run, name="faceverify-inference", daemon=True)
        self._started = False

    def start(self) -> None:
        if not self._started:
            self._thread.start()
            self._started = True

    def stop(self, timeout: float = 10.0) -> None:
        if self._started:
            self._queue.put(None)
            self._thread.join(timeout)
            self._started = False

    @property
    def pending(self) -> int:
        return self._pending

    def retry_after(self) -> float:
        """Seconds until the current backlog is likely gone."""
        return max(1.0, self._batch_seconds * (self._pending / self.max_batch + 1))

    async def submit(self, images: list[np.ndarray], policies: list[str]) -> InferenceResult:
        with self._lock:
            if self._pending >= self.max_queue:
                self.metrics.rejected.labels("overloaded").inc()
                raise OverloadedError(
                    f"the server is busy ({self._pending} requests queued); retry after the Retry-After delay.",
                    retry_after=self.retry_after(), queued=self._pending,
                )
            self._pending += 1
            self.metrics.queue_depth.set(self._pending)
        loop = asyncio.get_running_loop()
        job = _Job(images, policies, loop.create_future(), loop)
        self._queue.put(job)
        return await job.future

    # -- worker thread ---------------------------------------------------------------------

    def _take_batch(self, first: _Job) -> tuple[list[_Job], bool]:
        jobs, n, stop = [first], len(first.images), False
        deadline = time.perf_counter() + self.batch_wait
        while n < self.max_batch:
            try:
                remaining = deadline - time.perf_counter()
                job = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                stop = True
                break
            jobs.append(job)
            n += len(job.images)
        return jobs, stop

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs, stop = self._take_batch(first)
            with self._lock:
                self._pending -= len(jobs)
                self.metrics.queue_depth.set(self._pending)
            live = [j for j in jobs if not j.future.cancelled()]  # client gone: skip the work
            if live:
                self._process(live)
            if stop:
                return

    def _process(self, jobs: list[_Job]) -> None:
        images = [im for j in jobs for im in j.images]
        policies = [p for j in jobs for p in j.policies]
        start = time.perf_counter()
        try:
            results = self.verifier.embed_faces(images, policies)
            error = None
        except Exception as exc:  # noqa: BLE001 - delivered to every waiting request
            log.exception("inference failed for a batch of %d images", len(images))
            results, error = None, exc
        seconds = time.perf_counter() - start
        self._batch_seconds = 0.8 * self._batch_seconds + 0.2 * seconds
        self.metrics.inference.observe(seconds)
        self.metrics.batch_size.observe(len(images))
        offset = 0
        for job in jobs:
            if error is not None:
                job.loop.call_soon_threadsafe(_set_exception, job.future, error)
                continue
            mine = results[offset : offset + len(job.images)]
            offset += len(job.images)
            value = InferenceResult(mine, 1e3 * (start - job.enqueued), 1e3 * seconds, len(images))
            job.loop.call_soon_threadsafe(_set_result, job.future, value)


def _set_result(future: asyncio.Future, value) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future, exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
