"""faceverify prep on real identity folders: packed output, failure log, exclusions, and a
SIGKILLed run that resumes without duplicating or losing images."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from faceverify.errors import ConfigError
from faceverify.packed import PackedFaces
from faceverify.prep import prepare_dataset

REPO = Path(__file__).resolve().parents[1]


N_IDENTITIES = 8


@pytest.fixture(scope="module")
def small_source(tmp_path_factory, data_dir):
    """8 AT&T identities x 10 photos, plus a corrupt file, a faceless image and an excluded identity."""
    src = tmp_path_factory.mktemp("src")
    for ident in sorted(p for p in (data_dir / "train" / "att_orl").iterdir() if p.is_dir())[:N_IDENTITIES]:
        shutil.copytree(ident, src / ident.name)
    (src / "s1" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    from PIL import Image

    Image.new("RGB", (120, 120), (90, 90, 90)).save(src / "s1" / "blank.png")
    shutil.copytree(src / "s10", src / "0166921")  # a CASIA id that SphereFace removes (LFW overlap)
    return src


def run_prep(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "faceverify", "prep", *args], cwd=REPO, capture_output=True, text=True, **kw)


def test_prep_writes_packed_set_failures_and_summary(small_source, tmp_path):
    dst = tmp_path / "packed"
    result = run_prep(str(small_source), str(dst), "--workers", "2", "--chunk-size", "16")
    assert result.returncode == 0, result.stderr
    summary = json.loads((dst / "summary.json").read_text())
    for key in ("identities", "images_total", "images_kept", "images_failed", "images_per_s"):
        assert key in summary
    assert summary["identities_excluded"] == ["0166921"]
    assert summary["images_total"] == N_IDENTITIES * 10 + 2
    assert summary["images_kept"] + summary["images_failed"] == summary["images_total"]
    failures = (dst / "failures.csv").read_text().splitlines()
    reasons = {line.split(",")[0]: line.split(",")[1] for line in failures[1:]}
    assert reasons["s1/broken.jpg"] == "unreadable_image"
    assert reasons["s1/blank.png"] == "no_face"
    faces = PackedFaces(dst)
    assert len(faces) == summary["images_kept"] and faces.num_classes == N_IDENTITIES
    crop, label = faces[len(faces) - 1]
    assert crop.shape == (116, 100, 3) and crop.dtype == np.uint8 and crop.std() > 10
    assert faces.classes[label] == Path(faces.paths[-1]).parts[0]
    assert len(set(faces.paths)) == len(faces.paths)


@pytest.mark.slow  # two prep processes, one killed mid-run
def test_killed_prep_resumes_without_duplicates_or_losses(small_source, tmp_path):
    dst = tmp_path / "resumed"
    args = [str(small_source), str(dst), "--chunk-size", "8"]
    proc = subprocess.Popen([sys.executable, "-m", "faceverify", "prep", *args], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((dst / "shards").glob("*.json"))) < 3:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(list((dst / "shards").glob("*.json")))
    assert 3 <= done_before < 11, "the kill must land mid-run"
    assert not (dst / "manifest.json").exists()
    result = run_prep(*args)
    assert result.returncode == 0, result.stderr
    summary = json.loads((dst / "summary.json").read_text())
    assert summary["images_processed_this_run"] < summary["images_total"]  # finished shards were skipped
    resumed = PackedFaces(dst)
    failed = [line.split(",")[0] for line in (dst / "failures.csv").read_text().splitlines()[1:]]
    listed = sorted(p.relative_to(small_source).as_posix() for p in small_source.rglob("*") if p.is_file())
    listed = [p for p in listed if not p.startswith("0166921/")]  # the excluded identity
    assert sorted(resumed.paths + failed) == listed  # every image exactly once: kept or logged
    assert len(set(resumed.paths)) == len(resumed.paths) == summary["images_kept"]


def test_prep_refuses_to_mix_different_sources(tmp_path, data_dir):
    src = tmp_path / "one"
    shutil.copytree(data_dir / "train" / "att_orl" / "s3", src / "s3")
    dst = tmp_path / "mixed"
    prepare_dataset(src, dst, chunk_size=64, progress=False)
    with pytest.raises(ConfigError, match="other sources or options"):
        prepare_dataset(src, dst, chunk_size=32, progress=False)


def test_prep_from_landmark_file_uses_it(tmp_path, data_dir, lfw_images):
    src = tmp_path / "lfw_part"
    for name in ["Aaron_Eckhart", "Colin_Powell"]:
        shutil.copytree(lfw_images / name, src / name)
    result = run_prep(str(src), str(tmp_path / "out"), "--landmarks", str(data_dir / "lfw" / "lfw_landmark.txt"),
                      "--landmark-scale", "0.6", "--no-casia-exclusions")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    n_images = sum(1 for _ in src.rglob("*.jpg"))
    assert summary["alignment_sources"]["landmarks"] == n_images and summary["images_kept"] == n_images


def test_compare_landmarks_reports_nme(tmp_path, data_dir, lfw_images):
    src = tmp_path / "lfw_part"
    (src / "Colin_Powell").mkdir(parents=True)
    for path in sorted((lfw_images / "Colin_Powell").iterdir())[:24]:
        shutil.copy(path, src / "Colin_Powell" / path.name)
    result = run_prep(str(src), str(tmp_path / "out"), "--compare-landmarks", str(data_dir / "lfw" / "lfw_landmark.txt"),
                      "--landmark-scale", "0.6")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["landmark_nme_images"] >= 0.9 * summary["images_total"]
    assert 0.0 < summary["landmark_nme"] < 0.1
    # the systematic part is reported separately, and removing it can only lower the error
    assert len(summary["landmark_mean_offset_px"]) == 5 and summary["landmark_nme_offset_removed"] <= summary["landmark_nme"]


def test_wrong_landmark_scale_fails_fast(tmp_path, data_dir, lfw_images):
    src = tmp_path / "lfw_part"
    shutil.copytree(lfw_images / "Aaron_Eckhart", src / "Aaron_Eckhart")
    result = run_prep(str(src), str(tmp_path / "out"), "--landmarks", str(data_dir / "lfw" / "lfw_landmark.txt"))
    assert result.returncode != 0 and "--landmark-scale 0.6" in result.stderr


def test_several_sources_are_merged_with_prefixed_identities(tmp_path, data_dir):
    a, b = tmp_path / "setA", tmp_path / "setB"
    shutil.copytree(data_dir / "train" / "att_orl" / "s1", a / "p1")
    shutil.copytree(data_dir / "train" / "att_orl" / "s2", b / "p1")  # same folder name, other person
    (b / "p1" / "broken.jpg").write_bytes(b"not a jpeg")
    summary = prepare_dataset([a, b], tmp_path / "out", progress=False)
    faces = PackedFaces(tmp_path / "out")
    assert faces.classes == ["setA/p1", "setB/p1"] and summary["identities"] == 2
    assert all(p.startswith(("setA/p1/", "setB/p1/")) for p in faces.paths)
    assert "setB/p1/broken.jpg" in (tmp_path / "out" / "failures.csv").read_text()


def test_missing_source_is_a_clear_error(tmp_path):
    result = run_prep(str(tmp_path / "nope"), str(tmp_path / "out"))
    assert result.returncode == 2 and "does not exist" in result.stderr


def test_cli_lists_subcommands():
    out = subprocess.run([sys.executable, "-m", "faceverify", "--help"], cwd=REPO, capture_output=True, text=True).stdout
    for sub in ("prep", "train", "eval", "serve", "verify"):
        assert sub in out
