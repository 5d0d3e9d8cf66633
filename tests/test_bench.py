"""``python -m bench``: one command writes RESULTS.md/json with the interface's keys; a missing
optional peer is a "skipped" entry, never a crash; a run without --out other than a full one writes
to a temporary folder it names, never over the committed figures. Runs the real sections at their
smallest sizes."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # each runs `python -m bench` sections (the training section trains)


def run_bench(out: Path | None, *args: str) -> tuple[dict, str]:
    """``python -m bench --quick --out OUT ...``; with ``out`` None, no --out: the run must write to
    a temporary folder it names, never over the committed bench/RESULTS.*."""
    env = {**os.environ, "FACEVERIFY_BENCH_PROGRESS": "0"}
    committed = [(REPO / "bench" / name).read_bytes() for name in ("RESULTS.json", "RESULTS.md")]
    where = [] if out is None else ["--out", str(out)]
    proc = subprocess.run([sys.executable, "-m", "bench", "--quick", *where, "--repeats", "1", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert [(REPO / "bench" / name).read_bytes() for name in ("RESULTS.json", "RESULTS.md")] == committed
    written = Path(re.search(r"^wrote (\S+)/RESULTS\.md and ", proc.stderr, re.M).group(1))
    if out is None:
        assert written.parent == Path(tempfile.gettempdir()) and written.name.startswith("faceverify-bench-"), written
        results = json.loads((written / "RESULTS.json").read_text()), (written / "RESULTS.md").read_text()
        shutil.rmtree(written)
        return results
    assert written == out
    return json.loads((out / "RESULTS.json").read_text()), (out / "RESULTS.md").read_text()


def numbers(obj, path=""):
    """Every numeric leaf of a JSON object, with its path."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from numbers(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from numbers(v, f"{path}[{i}]")
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield path, obj


def assert_finite_non_negative(obj) -> None:
    bad = [(p, v) for p, v in numbers(obj) if not math.isfinite(v) or v < 0]
    assert not bad, bad


def test_verify_and_gallery_with_dlib_missing():
    res, md = run_bench(None, "--sections", "verify_pair,gallery", "--without-peer", "dlib", "--pairs", "4",
                        "--gallery-sizes", "3000,30000")
    vp = res["verify_pair"]
    assert vp["faceverify_p50_ms"] > 0 and vp["faceverify_p95_ms"] >= vp["faceverify_p50_ms"]
    # the peer is absent: its figures are missing and say why, the run did not fail
    assert vp["dlib_p50_ms"] is None and vp["speedup"] is None
    c = vp["contended"]  # the contended row runs without the peer too
    assert c["faceverify_p95_ms"] > 0 and c["faceverify_quiet_p95_ms"] == vp["faceverify_p95_ms"] and c["dlib_p95_ms"] is None
    assert vp["skipped"].startswith("skipped") and "--without-peer dlib" in vp["skipped"]
    assert res["sections"]["verify_pair"]["dlib"]["skipped"] == vp["skipped"]
    assert any("dlib" in s for s in res["skipped"]) and "## Skipped" in md
    sizes = res["sections"]["gallery"]["sizes"]
    assert set(sizes) == {"3000", "30000"}
    assert sizes["3000"]["index"]["type"] == "flat" and sizes["30000"]["index"]["type"] == "ivf"
    for r in sizes.values():
        assert r["p50_ms"] > 0 and r["recall_at_1"] <= 1 and r["memory_gb"] > 0 and r["speedup_vs_numpy"] > 0
    # against numpy's exact top-1: the flat index is exact, IVF nearly so (0.999 at 1M in RESULTS.md)
    assert sizes["3000"]["recall_at_1"] >= 0.99 and sizes["30000"]["recall_at_1"] >= 0.9
    assert "gallery_1m" not in res  # no 1M gallery in this run
    assert res["machine"]["usable_cpus"] >= 1 and res["versions"]["torch"]
    assert_finite_non_negative({k: v for k, v in res.items() if k != "options"})
    assert "faceverify_p50_ms" in json.dumps(res) and "# faceverify benchmarks (--quick)" in md


@pytest.mark.skipif(importlib.util.find_spec("face_recognition") is None or importlib.util.find_spec("dlib") is None,
                    reason="the dlib peer is not installed (bash bench/peers/install.sh)")
def test_verify_pair_against_dlib(tmp_path):
    res, md = run_bench(tmp_path, "--sections", "verify_pair", "--pairs", "2")
    vp = res["verify_pair"]
    assert vp["dlib_p50_ms"] > 0 and vp["speedup"] == pytest.approx(vp["dlib_p50_ms"] / vp["faceverify_p50_ms"], rel=0.01)
    c = vp["contended"]  # the interface: the same pairs with one competing busy process
    assert c["faceverify_p95_ms"] > 0 and c["dlib_p95_ms"] > 0 and c["faceverify_quiet_p95_ms"] == vp["faceverify_p95_ms"]
    assert c["faceverify_p95_vs_quiet"] == pytest.approx(c["faceverify_p95_ms"] / c["faceverify_quiet_p95_ms"], rel=0.01)
    assert res["sections"]["verify_pair"]["faceverify"]["omp_wait_policy"] == os.environ.get("OMP_WAIT_POLICY", "PASSIVE")
    assert "competing busy process" in md and len(res["headline"]["goals"]) == 3
    assert res["skipped"] == []
    speed, tail, versus_dlib = res["headline"]["goals"]  # each goal's verdict is its own value against its bar
    assert speed["value"] == vp["speedup"] and speed["met"] is (vp["speedup"] >= 4)
    assert tail["value"] == c["faceverify_p95_vs_quiet"] and tail["met"] is (c["faceverify_p95_vs_quiet"] <= 2)
    assert versus_dlib["value"] == c["dlib_p95_vs_faceverify"] and versus_dlib["met"] is (c["dlib_p95_vs_faceverify"] > 1)


def test_model_sections_smallest(tmp_path):
    """Sections 1, 2, 4, 6 at their quick sizes (prep on 16 images): structure and sane numbers.
    Section 7 (training, a third of this run's time when it was included) is measured by the
    trainer itself: test_train_speed_measures_the_trainer runs its measurement in-process."""
    res, md = run_bench(tmp_path, "--sections", "machine_limit,embedding,prep,service", "--prep-images", "16",
                        "--without-peer", "dlib")
    s = res["sections"]
    assert not [n for n, v in s.items() if "error" in v]
    assert s["machine_limit"]["gemm_fp32_gflops"]["median"] > 0
    for row in s["machine_limit"]["backbones"]:
        assert row["gflops_per_img"] > 0 and row["fraction_of_fp32_gemm_peak"] > 0
    assert s["embedding"]["peer"]["batch32_img_s"]["median"] > 0 and s["embedding"]["ours"][0]["batch32_vs_peer"] > 0
    assert s["prep"]["workers_1"]["images_per_s"]["median"] > 0 and s["prep"]["dlib"]["skipped"]
    assert [r["concurrency"] for r in s["service"]["verify"]] == [1, 8, 32]
    assert all(r["ok"] > 0 and r["p99_ms"] >= r["p50_ms"] > 0 for r in s["service"]["verify"])
    assert_finite_non_negative(s)
    for title in ("Machine limit", "Embedding throughput", "faceverify prep", "/verify under load"):
        assert title in md


def test_train_speed_measures_the_trainer(tmp_path):
    """Section 7's img/s is what faceverify.training.loop.train logs, on a packed set of random
    crops stored like the recipe's real one (a 56x48 recipe reads 112x96 crops, downscaled)."""
    from bench import train_speed
    from faceverify.checkpoint import load_backbone
    from faceverify.packed import PackedFaces
    from faceverify.training import loop
    from faceverify.training.config import load_config

    assert train_speed.train is loop.train
    tiny = ["model.kwargs={widths: [4, 8, 8, 16], bn: true}", "model.embedding_dim=32", "data.template=56x48", "data.pad=1",
            "data.workers=0", "train.batch_size=8", "train.threads=1"]
    cfg = load_config(REPO / "train" / "configs" / "smoke.yaml", tiny)
    result = train_speed.train_rate(cfg, classes=5, seconds=0.01, repeats=2, workdir=tmp_path)
    per_window = result["train_steps_per_window"]
    assert per_window >= 2 and len(result["train_windows"]) == 2 and result["data_workers"] == 0
    assert result["train_img_s"] == pytest.approx(sum(result["train_windows"]) / 2, rel=0.01) and result["train_img_s"] > 0
    # the timed run is a complete training run: 3 logged windows (the first is the warm-up), its model
    summary = json.loads((tmp_path / "timed" / "summary.json").read_text())
    assert summary["steps"] == 3 * per_window
    logged = (tmp_path / "timed" / "metrics.csv").read_text().splitlines()
    assert logged[0] == "step,loss,accuracy,lr,lambda" and [int(r.split(",")[0]) for r in logged[1:]] == [per_window * k for k in (1, 2, 3)]
    _, info = load_backbone(tmp_path / "timed")
    assert info.name == "sphereface20" and info.embedding_dim == 32 and info.template == "56x48"
    faces = PackedFaces(tmp_path / "timed_faces", as_template="56x48")
    assert faces.crop_size == (58, 50) and faces.downscale == 2 and faces.num_classes == 5 and len(faces) == 8 * (3 * per_window + 1)
