"""``faceverify serve``: the REST service on uvicorn.

    faceverify serve --model PATH --gallery DIR --host 127.0.0.1 --port 8000
    faceverify serve --model PATH --gallery postgresql://USER@HOST:PORT/DB   # several replicas, one gallery

API keys come from ``FACEVERIFY_API_KEY`` (comma-separated) or ``FACEVERIFY_API_KEY_FILE``; without
``--model`` the shipped ``models/default`` is served. The model is loaded and the gallery opened
before the port is bound, so a bad model or gallery fails here with a clear message.
"""

from __future__ import annotations

import argparse
import logging
import sys

from faceverify.embedder import FLIP_MODES
from faceverify.errors import FaceverifyError, exit_status


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="faceverify serve", description="Run the faceverify REST service.")
    p.add_argument("--model", default=None, help="checkpoint .pt, model directory, .onnx or dlib (dlib's descriptor, the [dlib] extra; default: models/default)")
    p.add_argument("--gallery", default=None,
                   help="gallery directory (SQLite + index snapshot; created if missing), or postgresql://USER@HOST:PORT/DB "
                        "(shared by several replicas; env FACEVERIFY_GALLERY_URL). Default: env FACEVERIFY_GALLERY_URL, else ./gallery")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: %(default)s; 0.0.0.0 in containers)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--auth", choices=("mutations", "all"), default=None,
                   help="routes that need an API key: gallery mutations (default) or all but /health (env FACEVERIFY_AUTH)")
    p.add_argument("--max-body-mb", type=float, default=None, help="largest request body in MiB (default 16)")
    p.add_argument("--max-pixels", type=int, default=None, help="largest decoded image in pixels (default 25,000,000)")
    p.add_argument("--max-batch", type=int, default=None, help="images per inference micro-batch (default 16)")
    p.add_argument("--batch-wait-ms", type=float, default=None, help="wait to fill a micro-batch (default 5)")
    p.add_argument("--max-queue", type=int, default=None, help="queued requests before 503 overloaded (default 64)")
    p.add_argument("--flat-max", type=int, default=None, help="largest collection in an exact index; IVF beyond (default 20000)")
    p.add_argument("--nprobe", type=int, default=None, help="IVF lists searched per query (default: a third of the lists)")
    p.add_argument("--pca", default=None, help="PCA projection .npz (mean, components) for the gallery index")
    p.add_argument("--flip", choices=FLIP_MODES, default=None, help="flip TTA (default: the calibration's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--runtime", choices=("auto", "onnx", "torch"), default=None,
                   help="onnxruntime or torch for the network and MTCNN (default auto: onnx when the model directory holds a "
                        "current model.onnx, which the base install needs; env FACEVERIFY_RUNTIME)")
    p.add_argument("--torch-threads", type=int, default=None,
                   help="intra-op threads of the inference worker, torch or onnxruntime (default 1, env "
                        "FACEVERIFY_TORCH_THREADS; docs/service.md, Threads)")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    return p


def gallery_setting(value: str | None) -> dict:
    """``--gallery``: a postgresql:// URL or a directory; None leaves it to the environment/default."""
    from faceverify.gallery import is_postgres_url

    if value is None:
        return {}
    return {"gallery_url": value} if is_postgres_url(value) else {"gallery_dir": value}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its CPU-feature probing is noise
    from faceverify.threads import apply_threads, apply_wait_policy, latency_threads

    apply_wait_policy()  # before any OpenMP runtime loads (torch, faiss: below)
    import os

    import uvicorn

    from faceverify.service import Settings, create_app
    from faceverify.service.state import load_verifier, open_gallery
    from faceverify.models import resolve_model

    try:
        threads = latency_threads(args.torch_threads)
        settings = Settings.from_env(
            model=resolve_model(args.model).path, auth_scope=args.auth, **gallery_setting(args.gallery),
            max_body_bytes=None if args.max_body_mb is None else int(args.max_body_mb * 1024 * 1024),
            max_pixels=args.max_pixels, max_batch=args.max_batch, batch_wait_ms=args.batch_wait_ms,
            max_queue=args.max_queue, flat_max=args.flat_max, nprobe=args.nprobe, pca=args.pca, flip=args.flip,
            device=args.device, torch_threads=threads, runtime=args.runtime or os.environ.get("FACEVERIFY_RUNTIME"),
        )
        # load the model and open the gallery now: failures exit here, before the port is bound
        verifier = load_verifier(settings)
        apply_threads(threads)  # torch's, when its runtime was chosen (onnxruntime's are set per session)
        gallery = open_gallery(settings, verifier)
    except FaceverifyError as exc:
        print(f"faceverify serve: {exc.message}", file=sys.stderr)
        return exit_status(exc)
    app = create_app(settings, verifier=verifier, gallery=gallery)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, proxy_headers=False,
                server_header=False, timeout_graceful_shutdown=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
