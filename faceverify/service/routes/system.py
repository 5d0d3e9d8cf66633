"""Liveness/readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from ... import threads
from ..metrics import CONTENT_TYPE_LATEST
from ..schemas import ErrorResponse, HealthResponse
from ..state import Service

router = APIRouter(tags=["system"])
metrics_router = APIRouter(tags=["system"])  # /metrics: behind the key when auth_scope is "all"


@router.get("/health", response_model=HealthResponse, responses={503: {"model": HealthResponse, "description": "not ready"}})
def health(request: Request):
    """Liveness (the process answers) and readiness (model loaded, gallery open, inference worker
    running): 200 when ready, 503 otherwise. Reports the gallery's index type per collection."""
    service: Service = request.app.state.service
    problems = service.readiness()
    body = HealthResponse(status="unavailable" if problems else "ok", ready=not problems, problems=problems)
    if service.verifier is not None:
        v = service.verifier
        body.model = {  # named by id and weights hash: no server path in any response
            "name": v.public_name,
            "id": v.model_id,
            "sha256": v.sha256[:16] if v.sha256 else None,
            "dim": v.dim,
            "flip": v.flip,
            "fingerprint": v.fingerprint,
            "calibrated": bool(v.calibration.thresholds),
            "calibration_file": v.calibration.path.name if v.calibration.path else None,
            "thresholds": v.calibration.thresholds,
            # what a client (the demo page) offers and preselects: the verdict /verify gives without options
            "default_operating_point": v.calibration.default_operating_point,
            "operating_points": v.calibration.operating_points(),
        }
    if service.gallery is not None and not problems:
        body.gallery = service.gallery.describe()
    body.runtime = threads.describe()
    if service.queue is not None:
        body.queue = {"pending": service.queue.pending, "max_queue": service.queue.max_queue, "max_batch": service.queue.max_batch}
    return JSONResponse(body.model_dump(), status_code=503 if problems else 200)


@metrics_router.get("/metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"},
                       401: {"model": ErrorResponse, "description": "unauthorized (auth scope 'all')"}})
def metrics(request: Request) -> Response:
    """Prometheus metrics: request counts/latencies by route and status, inference time and batch
    sizes, queue depth, gallery size."""
    service: Service = request.app.state.service
    if service.gallery is not None and service.ready():
        service.metrics.gallery_faces.set(service.gallery.size)
        service.metrics.gallery_collections.set(len(service.gallery.describe()["collections"]))
    return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)
