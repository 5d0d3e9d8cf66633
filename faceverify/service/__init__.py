"""The REST service (FastAPI): ``create_app(settings)``; run it with ``faceverify serve``."""

from .app import create_app
from .settings import Settings

__all__ = ["Settings", "create_app"]
