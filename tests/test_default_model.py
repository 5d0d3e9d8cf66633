"""The shipped default model (`models/default`): what it must contain, that the committed recipe is
the one it was trained with, and that `faceverify eval lfw` reproduces its committed LFW accuracy
from scratch (fresh feature and detection caches: MTCNN on all 7,701 View 2 images)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from faceverify.checkpoint import load_backbone, load_checkpoint
from faceverify.paths import DEFAULT_MODEL_DIR
from faceverify.training.config import load_config, recipe_hash

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def manifest():
    path = DEFAULT_MODEL_DIR / "MODEL.json"
    assert path.is_file(), f"{path} is missing: the default model has not been published (scripts/publish_model.py)"
    return json.loads(path.read_text())


def test_the_default_model_folder_is_complete(manifest):
    weights = DEFAULT_MODEL_DIR / "model.pt"
    assert weights.stat().st_size <= 25 * 2**20
    for name in ("calibration.json", "report/lfw.json", "report/lfw.md", "report/lfw_roc.png", "report/view1.json",
                 "training/metrics.csv", "training/training_curve.png"):
        assert (DEFAULT_MODEL_DIR / name).is_file(), name
    calibration = json.loads((DEFAULT_MODEL_DIR / "calibration.json").read_text())
    assert {"far_1e-3", "far_1e-4"} <= calibration["thresholds"].keys()
    assert calibration["thresholds"]["far_1e-4"] >= calibration["thresholds"]["far_1e-3"]
    model, info = load_backbone(DEFAULT_MODEL_DIR)
    assert info.template == manifest["template"]


def test_the_model_card_names_teacher_data_and_settings(manifest):
    assert {"backbone", "template", "recipe", "teacher", "evaluation", "lfw_view2"} <= manifest.keys()
    state = load_checkpoint(DEFAULT_MODEL_DIR / "model.pt")
    distilled = bool((state["config"].get("distill") or {}).get("teacher"))
    assert (manifest["teacher"] is not None) == distilled  # a distilled model names its teacher
    if distilled:
        assert manifest["teacher"]["licence"].startswith("public domain") and manifest["teacher"]["embedding_dim"] == 128
    for path in DEFAULT_MODEL_DIR.rglob("*.json"):  # no machine paths in the shipped folder
        assert str(REPO) not in path.read_text(), path


def test_the_committed_recipe_trained_the_default_model(manifest):
    state = load_checkpoint(DEFAULT_MODEL_DIR / "model.pt")
    committed = load_config(REPO / manifest["recipe"])
    assert recipe_hash(state["config"]) == manifest["recipe_sha256"] == recipe_hash(committed)


@pytest.mark.slow  # MTCNN and the network on all 7,701 View 2 images: ~2 minutes
def test_eval_lfw_reproduces_the_committed_accuracy(manifest, tmp_path):
    committed = json.loads((DEFAULT_MODEL_DIR / "report" / "lfw.json").read_text())
    out = tmp_path / "lfw"
    # the README's plain command: the default model with its recorded settings, writing under --out only
    before = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout
    argv = [sys.executable, "-m", "faceverify", "eval", "lfw", "--cache", str(tmp_path / "cache"), "--out", str(out)]
    result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout == before
    again = json.loads((out / "lfw.json").read_text())
    assert again["pairs"] == 6000 and len(again["folds"]) == 10 and "0.001" in again["tar_at_far"]
    assert again["flip"] == manifest["evaluation"]["flip"] == committed["flip"]
    assert abs(again["accuracy_mean"] - committed["accuracy_mean"]) <= 0.002
    assert abs(again["accuracy_mean"] - manifest["lfw_view2"]["accuracy_mean"]) <= 0.002
