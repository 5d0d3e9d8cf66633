"""Service configuration: one typed object, and the one declaration of every setting.

Each field says, once, its type, default and description, and (through :func:`setting`) its
environment variable and its ``faceverify serve`` option: the command's options are generated from
these fields (``faceverify/commands/serve.py``) and :meth:`Settings.from_env` reads the variables
they name. A value given on the command line beats the environment, which beats the default.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from ..embedder import FLIP_MODES
from ..errors import ConfigError
from ..image import DEFAULT_MAX_PIXELS
from ..runtime import RUNTIMES

AuthScope = Literal["mutations", "all"]
MIB = 1024 * 1024
API_KEY_FILE_ENV = "FACEVERIFY_API_KEY_FILE"  # one key per line, added to FACEVERIFY_API_KEY's


@dataclass(frozen=True)
class Declared:
    """How a setting is given besides Python: ``flag``, its ``faceverify serve`` option (None: it has
    none); ``env``, the environment variable ``from_env`` reads; ``unit``, what the option's number
    is multiplied by (``--max-body-mb`` 16 -> ``max_body_bytes`` 16 MiB)."""

    flag: str | None
    env: str | None = None
    unit: int = 1


def setting(default: Any, description: str, *, flag: str | None = "", env: str | None = None, unit: int = 1,
            **constraints: Any) -> Any:
    """A :class:`Settings` field: ``flag`` defaults to the field's name (``max_batch``: ``--max-batch``);
    ``None`` keeps the setting off the command line (API keys: out of the process list)."""
    extra = {"flag": flag, "env": env, "unit": unit}
    return Field(default, description=description, json_schema_extra=extra, **constraints)


class Settings(BaseModel):
    """Everything ``create_app`` needs, and where ``faceverify serve`` binds. Read the environment
    with :meth:`from_env`; the variables are the fields' (``FACEVERIFY_API_KEY``: comma-separated keys,
    several allow rotation, and ``FACEVERIFY_API_KEY_FILE``: one key per line)."""

    model: Path | None = setting(None, "checkpoint .pt, model directory, .onnx or dlib (dlib's descriptor, the [dlib] "
                                       "extra); default: models/default")
    gallery_dir: Path = setting(Path("gallery"), "gallery directory (SQLite + index snapshot; created if missing), or "
                                                 "postgresql://USER@HOST:PORT/DB (shared by several replicas: that is "
                                                 "gallery_url); without it, FACEVERIFY_GALLERY_URL if set", flag="--gallery")
    gallery_url: str | None = setting(None, "postgresql://USER@HOST:PORT/DB: the gallery in PostgreSQL, shared by several "
                                            "replicas, instead of gallery_dir (on the command line: --gallery URL)",
                                      flag=None, env="FACEVERIFY_GALLERY_URL", pattern=r"^postgres(ql)?://")
    api_keys: list[str] = setting([], "accepted API keys (none: gallery changes are refused with 401); also one per "
                                      f"line of the file {API_KEY_FILE_ENV} names", flag=None, env="FACEVERIFY_API_KEY")
    auth_scope: AuthScope = setting("mutations", "routes that need an API key: gallery mutations, or all but /health",
                                    flag="--auth", env="FACEVERIFY_AUTH")
    host: str = setting("127.0.0.1", "bind address (0.0.0.0 in containers)")
    port: int = setting(8000, "TCP port", ge=0, le=65535)
    max_body_bytes: int = setting(16 * MIB, "largest request body (413 payload_too_large), in bytes; in MiB on the command line",
                                  flag="--max-body-mb", unit=MIB, ge=1024)
    max_pixels: int = setting(min(DEFAULT_MAX_PIXELS, 25_000_000), "largest decoded image in pixels (413 image_too_large)",
                              ge=64)
    max_batch: int = setting(16, "images per inference micro-batch", ge=1)
    batch_wait_ms: float = setting(5.0, "how long the batcher waits to fill a micro-batch", ge=0)
    max_queue: int = setting(64, "queued inference jobs before 503 overloaded + Retry-After", ge=1)
    decode_concurrency: int = setting(4, "images decoded at once (bounds memory)", ge=1)
    flat_max: int = setting(20_000, "largest collection kept in an exact (flat) index; IVF beyond", ge=1)
    nprobe: int | None = setting(None, "IVF lists searched per query (default: a third of the lists)", ge=1)
    pca: Path | None = setting(None, "PCA projection .npz (mean, components) for the gallery index")
    flip: Literal[FLIP_MODES] | None = setting(None, "flip TTA (default: the calibration file's)")
    device: str = setting("cpu", "torch device of the network and MTCNN")
    runtime: Literal[RUNTIMES] = setting("auto", "onnxruntime or torch for the network and MTCNN (auto: onnx when the "
                                                 "model directory holds a current model.onnx, which the base install "
                                                 "needs; faceverify.runtime)", env="FACEVERIFY_RUNTIME")
    torch_threads: int | None = setting(None, "intra-op threads of the inference worker, torch or onnxruntime (faceverify "
                                              "serve: 1 unless given; in Python: the runtimes' own; docs/service.md, "
                                              "Threads)", env="FACEVERIFY_TORCH_THREADS", ge=1)
    log_level: Literal["debug", "info", "warning", "error"] = setting("info", "log level of faceverify serve")

    @property
    def gallery_location(self) -> str | Path:
        return self.gallery_url or self.gallery_dir

    @model_validator(mode="before")
    @classmethod
    def gallery_url_given_as_location(cls, values: Any) -> Any:
        """``--gallery`` takes a directory or a postgresql:// URL: a URL is the ``gallery_url``."""
        from ..gallery.storage import is_postgres_url

        if isinstance(values, dict) and is_postgres_url(values.get("gallery_dir")):
            values = {**values, "gallery_url": values["gallery_dir"]}
            del values["gallery_dir"]
        return values

    @classmethod
    def declared(cls, name: str) -> Declared:
        """How the field ``name`` is given on the command line and in the environment."""
        extra = cls.model_fields[name].json_schema_extra or {}
        flag = extra.get("flag", "")
        return Declared("--" + name.replace("_", "-") if flag == "" else flag, extra.get("env"), int(extra.get("unit", 1)))

    @classmethod
    def from_env(cls, **overrides) -> "Settings":
        """The settings from the fields' environment variables, then ``overrides`` (None: not given)."""
        values: dict = {}
        for name, field in cls.model_fields.items():
            env = cls.declared(name).env
            if env and os.environ.get(env, "").strip():
                text = os.environ[env].strip()
                values[name] = [k.strip() for k in text.split(",") if k.strip()] if field.annotation == list[str] else text
        key_file = os.environ.get(API_KEY_FILE_ENV)
        if key_file:
            try:
                keys = [line.strip() for line in Path(key_file).read_text().splitlines() if line.strip()]
            except OSError as exc:
                raise ConfigError(f"{API_KEY_FILE_ENV}={key_file} cannot be read ({exc}).") from exc
            values["api_keys"] = values.get("api_keys", []) + keys
        if overrides.get("gallery_dir") is not None and overrides.get("gallery_url") is None:
            values.pop("gallery_url", None)  # an explicit --gallery beats FACEVERIFY_GALLERY_URL
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**values)
        except ValueError as exc:
            raise ConfigError(f"invalid service settings: {exc}") from exc
