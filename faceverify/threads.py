"""Thread and OpenMP wait policy for the per-request latency paths (``faceverify verify``,
``faceverify serve``): what keeps a pair's latency steady when the CPU is shared.

Measured (docs/service.md, "Threads"): with torch's default 2 threads and OpenMP's default
spin-waiting, one competing busy process took in-process pair verification from p50 56 / p95 ~70 ms
to p50 126 / p95 1,126 ms -- idle OpenMP workers spin while the thread they wait for is descheduled.
One intra-op thread, or ``OMP_WAIT_POLICY=PASSIVE`` (workers sleep instead of spinning), each
removes most of that; the latency paths use both.

OpenMP reads its environment once, when the runtime is loaded (at ``import torch``, or faiss), so
:func:`apply_wait_policy` must run before that; :func:`apply_threads` may run any time. The onnx
runtime (onnxruntime's own thread pool, not OpenMP) gets the same policy per session: the
requested intra-op threads and no spinning (``faceverify.mtcnn_onnx.session_options``).
Overrides: ``--torch-threads N`` / ``FACEVERIFY_TORCH_THREADS=N``; ``OMP_WAIT_POLICY`` and
``KMP_BLOCKTIME`` set in the environment are kept as given.
"""

from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger(__name__)

THREADS_ENV = "FACEVERIFY_TORCH_THREADS"
LATENCY_THREADS = 1  # per request (per serve worker): batching, not intra-op threads, gives throughput
# GNU OpenMP (torch's) honours OMP_WAIT_POLICY; KMP_BLOCKTIME is the Intel OpenMP equivalent, for
# builds that load libiomp (MKL's threading layer)
WAIT_POLICY_ENV = {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}


def apply_wait_policy(env: dict | None = None) -> dict:
    """Set the passive wait policy in ``env`` (default: this process's environment) unless the
    user set it; returns ``env``. In this process it only takes effect if torch is not loaded yet."""
    target = os.environ if env is None else env
    for key, value in WAIT_POLICY_ENV.items():
        target.setdefault(key, value)
    if env is None and "torch" in sys.modules:
        log.warning("torch was imported before the OpenMP wait policy was set; OMP_WAIT_POLICY=%s may not apply",
                    target.get("OMP_WAIT_POLICY"))
    return target


def latency_threads(requested: int | None = None) -> int:
    """Intra-op threads for a latency path: ``requested`` (a flag), else FACEVERIFY_TORCH_THREADS,
    else 1."""
    from .errors import ConfigError

    if requested is not None:
        if int(requested) < 1:
            raise ConfigError(f"--torch-threads {requested}: expected a positive integer.")
        return int(requested)
    value = os.environ.get(THREADS_ENV, "").strip()
    if value:
        try:
            n = int(value)
        except ValueError:
            n = 0
        if n < 1:
            raise ConfigError(f"{THREADS_ENV}={value!r}: expected a positive integer (torch intra-op threads).")
        return n
    return LATENCY_THREADS


def apply_threads(n: int) -> int:
    """Set torch's intra-op threads, if torch is loaded (the onnx runtime takes its threads when
    its sessions are made: ``Verifier.from_model(threads=...)``); returns ``n``. Importing torch
    here would load it into a process that runs on onnxruntime only."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(int(n))
    return int(n)


def describe() -> dict:
    """The policy in effect, for /health and benchmark reports (torch_threads: None without torch)."""
    torch = sys.modules.get("torch")
    return {"torch_threads": torch.get_num_threads() if torch is not None else None,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "kmp_blocktime": os.environ.get("KMP_BLOCKTIME")}
