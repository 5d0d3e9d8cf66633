"""Section 3 — end-to-end pair verification on the same LFW View 2 pairs (every second pair of
fold 1: 150 same + 150 different), one pair at a time, in-process:

* faceverify: ``Verifier.verify(path1, path2)`` — decode, MTCNN, choose the face, align, embed,
  cosine, verdict at the model's calibrated threshold; on the service's default runtime
  (onnxruntime, ``faceverify.runtime``) and, side by side, on the torch runtime (the [train] extra).
* face_recognition/dlib (optional peer): ``load_image_file`` -> ``face_locations`` (HOG,
  upsample 1) -> the largest face (dlib_adapter's CENTRE_BOX when HOG finds none) ->
  ``face_encodings(model="small")`` (5-point chip, 128-d ResNet) -> ``face_distance``, verdict at
  face_recognition's default tolerance 0.6.

The two are interleaved pair by pair (so a change in machine load hits both). Latency per pair:
p50/p95 over the pairs; accuracy on those pairs at each system's own threshold, and the
optimistic best-threshold accuracy on the same pairs (labelled). faceverify runs with the thread
policy of ``faceverify verify`` (faceverify/threads.py: 1 torch thread, passive OpenMP waits; the
section's process gets the environment from ``python -m bench``; ``--threads`` overrides), and is
also timed with exactly 1 torch thread on a subset.

**Contended**: the same pairs again, interleaved the same way, while one competing busy process
(a pure-Python spin loop in a subprocess that stops itself after a bounded time) shares the CPU:
``contended`` gives both systems' p50/p95 under it next to faceverify's quiet p95 of the same run.

    python -m bench.verify_pair [--quick] [--pairs N] [--without-peer dlib]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import bench_model, load_average, peer_missing, percentiles_ms, progress, ratio

DLIB_TOLERANCE = 0.6  # face_recognition.compare_faces default (Euclidean distance)


def benchmark_pairs(n: int) -> list[tuple[str, str, bool]]:
    """``n`` pairs from fold 1 of View 2, alternating same/different (every second pair of the
    fold's 300 same + 300 different, spread evenly when n < 300)."""
    from faceverify.evaluation.lfw import read_pairs
    from faceverify.paths import lfw_root

    pl = read_pairs(lfw_root() / "pairs.txt")
    fold = np.flatnonzero(pl.folds == 0)
    same, diff = fold[pl.same[fold]][::2], fold[~pl.same[fold]][::2]  # 150 + 150
    half = max(1, n // 2)
    pick_s = same[np.linspace(0, len(same) - 1, min(half, len(same))).round().astype(int)]
    pick_d = diff[np.linspace(0, len(diff) - 1, min(n - len(pick_s), len(diff))).round().astype(int)]
    order = [int(i) for pair in zip(pick_s, pick_d) for i in pair] + [int(i) for i in pick_s[len(pick_d):]]
    root = lfw_root() / "images"
    return [(str(root / pl.left[i]), str(root / pl.right[i]), bool(pl.same[i])) for i in order]


def warmup_pair() -> tuple[str, str]:
    """A pair outside fold 1 (the first pair of fold 2)."""
    from faceverify.evaluation.lfw import read_pairs
    from faceverify.paths import lfw_root

    pl = read_pairs(lfw_root() / "pairs.txt")
    i = int(np.flatnonzero(pl.folds == 1)[0])
    return str(lfw_root() / "images" / pl.left[i]), str(lfw_root() / "images" / pl.right[i])


class FaceverifyPair:
    def __init__(self, model: Path, runtime: str = "auto"):
        from faceverify.threads import latency_threads
        from faceverify.verify import Verifier

        self.verifier = Verifier.from_model(model, runtime=runtime, threads=latency_threads())  # as `faceverify verify`
        self.runtime = "onnx" if self.verifier.name.startswith("onnx:") else "torch"
        self.threshold = self.verifier.threshold()

    def __call__(self, a: str, b: str) -> tuple[bool, float | None, bool]:
        """(verdict, similarity or None, face found in both)."""
        from faceverify.errors import FaceverifyError

        try:
            out = self.verifier.verify(a, b)
        except FaceverifyError:  # no face / several faces: refused, counted as "not the same"
            return False, None, False
        return out["same_person"], out["similarity"], True


class DlibPair:
    def __init__(self):
        import face_recognition  # noqa: F401  (loads dlib's models once, here)

        from bench.peers.dlib_adapter import CENTRE_BOX

        self.fr = face_recognition
        self.centre_box = CENTRE_BOX

    def encode(self, path: str) -> tuple[np.ndarray, bool]:
        fr = self.fr
        img = fr.load_image_file(path)
        locations = fr.face_locations(img, number_of_times_to_upsample=1, model="hog")  # (top, right, bottom, left)
        found = bool(locations)
        if found:
            loc = max(locations, key=lambda t: (t[2] - t[0]) * (t[1] - t[3]))
        else:
            h, w = img.shape[:2]
            x1, y1, x2, y2 = self.centre_box * np.array([w, h, w, h])
            loc = (int(y1), int(x2), int(y2), int(x1))
        return fr.face_encodings(img, [loc], num_jitters=1, model="small")[0], found

    def __call__(self, a: str, b: str) -> tuple[bool, float, bool]:
        (ea, fa), (eb, fb) = self.encode(a), self.encode(b)
        distance = float(self.fr.face_distance([ea], eb)[0])
        return distance <= DLIB_TOLERANCE, -distance, fa and fb


# One competing busy process: pure Python (one core, no OpenMP of its own), bounded in time and
# stopping with its parent, so a killed benchmark never leaves it spinning.
SPINNER = """
import os, sys, time
deadline, parent = time.monotonic() + float(sys.argv[1]), os.getppid()
n = 0
while time.monotonic() < deadline:
    for _ in range(100000):
        n += 1
    if os.getppid() != parent:
        break
"""


class BusyProcess:
    """``with BusyProcess(seconds):`` one spinning subprocess for at most ``seconds``."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "BusyProcess":
        self.proc = subprocess.Popen([sys.executable, "-c", SPINNER, str(self.seconds)], stdin=subprocess.DEVNULL)
        time.sleep(0.5)  # let it reach the scheduler's steady state
        return self

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def time_pairs(systems: dict, pairs, rec: dict, bar) -> None:
    """Each pair through every system in turn (interleaved), appending to ``rec[name]``."""
    for a, b, _ in pairs:
        for name, fn in systems.items():
            t0 = time.perf_counter()
            verdict, score, found = fn(a, b)
            rec[name]["lat"].append(time.perf_counter() - t0)
            rec[name]["verdict"].append(verdict)
            rec[name]["score"].append(score)
            rec[name]["found"].append(found)
        bar.update()


def best_threshold_accuracy(scores: list[float | None], same: list[bool]) -> float:
    """Accuracy at the best threshold on these very pairs (optimistic: tuned on the test pairs)."""
    s = np.array([-np.inf if v is None else v for v in scores])
    y = np.array(same)
    cands = np.concatenate([[-np.inf], np.unique(s[np.isfinite(s)])])
    return float(max(((s > t) == y).mean() for t in cands))


def summarise(latencies, verdicts, scores, found, same) -> dict:
    out = percentiles_ms(latencies)
    out["accuracy"] = round(float(np.mean(np.array(verdicts) == np.array(same))), 4)
    out["best_threshold_accuracy_optimistic"] = round(best_threshold_accuracy(scores, same), 4)
    out["pairs_without_face"] = int(sum(not f for f in found))
    return out


def run(opts: dict) -> dict:
    from faceverify.runtime import have_torch
    from faceverify.threads import apply_threads, describe, latency_threads

    quick = bool(opts.get("quick"))
    n = int(opts.get("pairs") or (30 if quick else 300))
    pairs = benchmark_pairs(n)
    same = [s for _, _, s in pairs]
    missing = peer_missing("dlib", opts.get("without", ()))
    n_one_thread = min(len(pairs), 10 if quick else 60)
    bar = progress(2 * len(pairs) + n_one_thread + 1, "3 verify pair")
    with tempfile.TemporaryDirectory(prefix="fv-bench-verify-") as tmp:
        model, model_info = bench_model(Path(tmp))
        systems = {"faceverify": FaceverifyPair(model)}
        if have_torch() and systems["faceverify"].runtime != "torch":
            systems["faceverify_torch"] = FaceverifyPair(model, runtime="torch")
            if not opts.get("threads"):
                apply_threads(latency_threads())  # torch's, as `faceverify verify --runtime torch`
        if not missing:
            systems["dlib"] = DlibPair()
        for fn in systems.values():  # warm-up (first-call allocations, lazy model loads)
            fn(*warmup_pair())
        bar.update()
        rec = {k: {"lat": [], "verdict": [], "score": [], "found": []} for k in systems}
        t_quiet = time.perf_counter()
        time_pairs(systems, pairs, rec, bar)
        t_quiet = time.perf_counter() - t_quiet
        busy = {k: {"lat": [], "verdict": [], "score": [], "found": []} for k in systems}
        busy_load = load_average()
        contenders = {k: v for k, v in systems.items() if k != "faceverify_torch"}
        with BusyProcess(seconds=3 * t_quiet + 60):  # bounded: ample for the same pairs at a third the speed
            time_pairs(contenders, pairs, busy, bar)
        policy = describe()
        threads = policy["torch_threads"] or latency_threads()
        torch = sys.modules.get("torch")
        if torch is not None:
            torch.set_num_threads(1)
        one = []
        for a, b, _ in pairs[:n_one_thread]:
            t0 = time.perf_counter()
            systems["faceverify"](a, b)
            one.append(time.perf_counter() - t0)
            bar.update()
        if torch is not None:
            torch.set_num_threads(threads)
        threshold = systems["faceverify"].threshold
        runtime = systems["faceverify"].runtime
    bar.close()
    fv = summarise(rec["faceverify"]["lat"], rec["faceverify"]["verdict"], rec["faceverify"]["score"], rec["faceverify"]["found"], same)
    fv.update(runtime=runtime, torch_threads=threads, omp_wait_policy=policy["omp_wait_policy"], threshold=round(threshold.value, 4),
              threshold_source=threshold.source, operating_point=threshold.operating_point,
              one_thread=percentiles_ms(one))
    contended = {"competing_processes": 1, "competitor": "a pure-Python spin loop in a subprocess (one core, bounded time)",
                 "load_avg_start": busy_load, "faceverify": percentiles_ms(busy["faceverify"]["lat"]),
                 "dlib": {"skipped": missing} if missing else percentiles_ms(busy["dlib"]["lat"])}
    result = {"pairs": len(pairs), "pairs_same": int(sum(same)),
              "pair_selection": "LFW View 2 fold 1, every second pair (150 same + 150 different when 300)",
              "model": model_info, "faceverify": fv, "contended": contended}
    if "faceverify_torch" in rec:
        t = rec["faceverify_torch"]
        result["faceverify_torch"] = summarise(t["lat"], t["verdict"], t["score"], t["found"], same)
        result["faceverify_torch"].update(runtime="torch", torch_threads=threads)
    else:
        result["faceverify_torch"] = {"skipped": "torch is not installed (the [train] extra)" if not have_torch() else
                                      "the default runtime is torch (no current model.onnx)"}
    if missing:
        result["dlib"] = {"skipped": missing}
        dlib_p50 = None
    else:
        import dlib

        d = rec["dlib"]
        result["dlib"] = summarise(d["lat"], d["verdict"], d["score"], d["found"], same)
        result["dlib"].update(threads=1, tolerance=DLIB_TOLERANCE, dlib=dlib.__version__,
                              pipeline="face_recognition: HOG upsample 1, largest face, 5-point chip, 128-d ResNet, Euclidean")
        dlib_p50 = result["dlib"]["p50_ms"]
    # the headline: dlib's p50 / ours (> 1: faceverify faster)
    result["headline"] = {
        "faceverify_p50_ms": fv["p50_ms"], "faceverify_p95_ms": fv["p95_ms"],
        "dlib_p50_ms": dlib_p50, "dlib_p95_ms": None if missing else result["dlib"]["p95_ms"],
        "speedup": ratio(dlib_p50, fv["p50_ms"]),
        "runtime": runtime,
        "torch_runtime_p50_ms": result["faceverify_torch"].get("p50_ms"),
        "speedup_torch_runtime": ratio(dlib_p50, result["faceverify_torch"].get("p50_ms")),
        "onnx_vs_torch_runtime": ratio(result["faceverify_torch"].get("p50_ms"), fv["p50_ms"]),
        "speedup_one_thread": ratio(dlib_p50, fv["one_thread"]["p50_ms"]),
        "faceverify_accuracy": fv["accuracy"], "dlib_accuracy": None if missing else result["dlib"]["accuracy"],
        "accuracy_meaningful": bool(model_info["trained"]),
        "pairs": len(pairs),
        # the same pairs with one competing busy process; goal: faceverify's p95 <= 2x its quiet p95
        # of this run, and below dlib's under the same contention
        "contended": {
            "faceverify_p95_ms": contended["faceverify"]["p95_ms"],
            "faceverify_quiet_p95_ms": fv["p95_ms"],
            "dlib_p95_ms": None if missing else contended["dlib"]["p95_ms"],
            "faceverify_p50_ms": contended["faceverify"]["p50_ms"],
            "dlib_p50_ms": None if missing else contended["dlib"]["p50_ms"],
            "faceverify_p95_vs_quiet": ratio(contended["faceverify"]["p95_ms"], fv["p95_ms"]),
            "dlib_p95_vs_faceverify": None if missing else ratio(contended["dlib"]["p95_ms"], contended["faceverify"]["p95_ms"]),
            "load_avg_start": busy_load,
        },
    }
    if missing:
        result["headline"]["skipped"] = missing
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--pairs", type=int)
    p.add_argument("--without-peer", action="append", default=[])
    args = p.parse_args(argv)
    print(json.dumps(run({"quick": args.quick, "pairs": args.pairs, "without": args.without_peer}), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
