"""Service configuration: one typed object, filled from CLI flags and the environment."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from ..errors import ConfigError
from ..image import DEFAULT_MAX_PIXELS

AuthScope = Literal["mutations", "all"]


class Settings(BaseModel):
    """Everything ``create_app`` needs. Environment variables (read by :meth:`from_env`):

    ``FACEVERIFY_API_KEY`` (comma-separated keys; several allow rotation), ``FACEVERIFY_API_KEY_FILE``
    (one key per line), ``FACEVERIFY_AUTH`` (``mutations`` | ``all``), ``FACEVERIFY_GALLERY_URL``
    (a ``postgresql://`` gallery; keeps a password out of the command line).
    """

    @property
    def gallery_location(self) -> str | Path:
        return self.gallery_url or self.gallery_dir

    model: Path | None = Field(None, description="checkpoint .pt, model directory or .onnx; None = models/default")
    gallery_dir: Path = Field(Path("gallery"), description="directory of the SQLite gallery and its index snapshot")
    gallery_url: str | None = Field(None, pattern=r"^postgres(ql)?://",
                                    description="postgresql://USER@HOST:PORT/DB: the gallery in PostgreSQL, shared by "
                                                "several replicas (instead of gallery_dir)")
    api_keys: list[str] = Field(default_factory=list, description="accepted API keys (empty: gallery mutations are refused)")
    auth_scope: AuthScope = Field("mutations", description="which routes need a key: gallery mutations, or all but /health")
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="largest request body (413 payload_too_large)")
    max_pixels: int = Field(min(DEFAULT_MAX_PIXELS, 25_000_000), ge=64, description="largest decoded image (413 image_too_large)")
    max_batch: int = Field(16, ge=1, description="images per micro-batch")
    batch_wait_ms: float = Field(5.0, ge=0, description="how long the batcher waits to fill a batch")
    max_queue: int = Field(64, ge=1, description="queued inference jobs before 503 overloaded + Retry-After")
    decode_concurrency: int = Field(4, ge=1, description="images decoded at once (bounds memory)")
    flat_max: int = Field(20_000, ge=1, description="largest collection kept in an exact (flat) index; IVF beyond")
    nprobe: int | None = Field(None, ge=1, description="IVF lists searched per query; None = a third of the lists")
    pca: Path | None = Field(None, description="optional PCA projection (.npz with mean, components) for the index")
    flip: str | None = Field(None, description="flip TTA; default: the calibration file's")
    device: str = "cpu"
    runtime: str = Field("auto", pattern=r"^(auto|onnx|torch)$",
                         description="onnxruntime or torch for the network and MTCNN (auto: onnx when the model has a current "
                                     "model.onnx; faceverify.runtime)")
    torch_threads: int | None = Field(None, ge=1, description="intra-op threads of torch and of each onnxruntime session "
                                                               "(None: the runtimes' own; faceverify serve passes 1)")

    @classmethod
    def from_env(cls, **overrides) -> "Settings":
        keys = [k.strip() for k in os.environ.get("FACEVERIFY_API_KEY", "").split(",") if k.strip()]
        key_file = os.environ.get("FACEVERIFY_API_KEY_FILE")
        if key_file:
            try:
                keys += [line.strip() for line in Path(key_file).read_text().splitlines() if line.strip()]
            except OSError as exc:
                raise ConfigError(f"FACEVERIFY_API_KEY_FILE={key_file} cannot be read ({exc}).") from exc
        values: dict = {"api_keys": keys}
        if os.environ.get("FACEVERIFY_AUTH"):
            values["auth_scope"] = os.environ["FACEVERIFY_AUTH"]
        if os.environ.get("FACEVERIFY_GALLERY_URL"):
            values["gallery_url"] = os.environ["FACEVERIFY_GALLERY_URL"]
        if overrides.get("gallery_dir") is not None and overrides.get("gallery_url") is None:
            values.pop("gallery_url", None)  # an explicit directory beats FACEVERIFY_GALLERY_URL
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**values)
        except ValueError as exc:
            raise ConfigError(f"invalid service settings: {exc}") from exc
