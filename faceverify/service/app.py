"""The app factory: ``create_app(settings)`` -> a FastAPI app serving one model and one gallery;
``serve(settings)`` runs it on uvicorn (``faceverify serve``)."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from .. import __version__
from ..gallery import Gallery
from ..verify import Verifier
from .access_log import install_redaction
from .auth import KeyRequiredMiddleware, ReadAuth
from .errors import install_error_handlers
from .http_head import HeadMiddleware
from .limits import BodyLimitMiddleware
from .metrics import Metrics, MetricsMiddleware
from .request_id import RequestIdMiddleware
from .routes import faces as faces_routes
from .routes import gallery as gallery_routes
from .routes import system as system_routes
from .settings import Settings
from .state import Service, open_model_and_gallery

log = logging.getLogger("faceverify.service")

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"

DESCRIPTION = """
Face verification and identification.

* `POST /verify`: two photos -> similarity, calibrated threshold, verdict.
* `POST /embed`: one photo -> embedding.
* Gallery: collections -> subjects -> faces; `POST /identify` for top-k subjects.
* Errors are JSON `{"code", "message", "details"}` with a stable `code` (see docs/service.md).
* Every response carries `X-Request-ID` (the client's own, sanitised, or a new one).
* Gallery changes need an API key (`X-API-Key`). The demo page is at `/demo/`.
"""


def create_app(settings: Settings | None = None, *, verifier: Verifier | None = None, gallery: Gallery | None = None) -> FastAPI:
    """Build the app. The model is loaded once and the gallery opened at start-up (or the given
    ``verifier``/``gallery`` are used); both are closed, with an index snapshot, at shutdown."""
    settings = settings or Settings.from_env()
    metrics = Metrics()
    service = Service(settings, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        install_redaction()  # here: after the server has configured its loggers
        service.decode_limiter = anyio.CapacityLimiter(settings.decode_concurrency)
        if service.verifier is None:
            await anyio.to_thread.run_sync(service.open, verifier, gallery)
        if not settings.api_keys:
            log.warning("no API key configured (FACEVERIFY_API_KEY): gallery changes are refused with 401")
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(service.close)

    app = FastAPI(title="faceverify", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.state.service = service
    install_error_handlers(app)
    # with auth_scope "all", every route but /health needs the key (and the OpenAPI says so);
    # gallery mutations always do (their own dependency)
    read_auth = [ReadAuth] if settings.auth_scope == "all" else []
    app.include_router(system_routes.router)
    app.include_router(system_routes.metrics_router, dependencies=read_auth)
    app.include_router(faces_routes.router, dependencies=read_auth)
    app.include_router(gallery_routes.router, dependencies=read_auth)
    app.mount("/demo", StaticFiles(directory=STATIC_DIR, html=True), name="demo")

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/demo/")

    # the last added is the outermost: request id (on every response) -> HEAD -> metrics (sees
    # every response) -> key -> body limit
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    if settings.auth_scope == "all":
        app.add_middleware(KeyRequiredMiddleware, keys=settings.api_keys)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(HeadMiddleware)
    app.add_middleware(RequestIdMiddleware)
    return app


def serve(settings: Settings) -> None:
    """Load the model and open the gallery (a bad model or gallery raises here, before the port is
    bound), then serve on ``settings.host:settings.port`` until stopped."""
    import uvicorn

    verifier, gallery = open_model_and_gallery(settings)
    app = create_app(settings, verifier=verifier, gallery=gallery)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level, proxy_headers=False,
                server_header=False, timeout_graceful_shutdown=10)
