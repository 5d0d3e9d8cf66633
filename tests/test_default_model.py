"""The shipped default model (`models/default`): what it must contain, that the committed recipe is
the one it was trained with, and that `faceverify eval lfw`'s feature path reproduces its committed
LFW results from scratch (fresh feature and detection caches) on a checked fold."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from faceverify.checkpoint import load_backbone, load_checkpoint
from faceverify.paths import DEFAULT_MODEL_DIR, MODELS_DIR
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


def test_the_model_card_names_teachers_terms_data_and_settings(manifest):
    assert {"backbone", "template", "recipe", "distillation", "weights_terms", "evaluation", "lfw_view2"} <= manifest.keys()
    state = load_checkpoint(DEFAULT_MODEL_DIR / "model.pt")
    specs = (state["config"].get("distill") or {}).get("teacher") or []
    specs = [specs] if isinstance(specs, str) else [str(s) for s in specs]
    if not specs:
        assert manifest["distillation"] is None
    else:  # a distilled model names every teacher the recipe named, with its licence and weights
        teachers = manifest["distillation"]["teachers"]
        assert [t["spec"] for t in teachers] == specs
        for teacher in teachers:
            assert teacher["licence"] and teacher["embedding_dim"] > 0, teacher
            if teacher["spec"] != "dlib":
                card = json.loads((MODELS_DIR / teacher["spec"] / "MODEL.json").read_text())
                assert teacher["licence"] == card["licence"] and teacher["weights"]["sha256"] == card["weights"]["sha256"]
        if any("non-commercial" in t["licence"] for t in teachers):
            assert manifest["weights_terms"].startswith("research / non-commercial use only")
        assert "LFW" in manifest["teacher_data"]
    for path in DEFAULT_MODEL_DIR.rglob("*.json"):  # no machine paths in the shipped folder
        assert str(REPO) not in path.read_text(), path


def test_the_committed_recipe_trained_the_default_model(manifest):
    state = load_checkpoint(DEFAULT_MODEL_DIR / "model.pt")
    committed = load_config(REPO / manifest["recipe"])
    assert recipe_hash(state["config"]) == manifest["recipe_sha256"] == recipe_hash(committed)


CHECKED_FOLDS = (1,)  # the report's least accurate fold (8 of 600 wrong): every fold runs the same code


@pytest.mark.slow  # MTCNN and the network on one View 2 fold's ~1,100 images: ~25 s
def test_eval_lfw_reproduces_the_committed_accuracy(manifest, tmp_path):
    """`faceverify eval lfw`'s own feature path (its parser, the model's recorded settings, the
    feature extraction with MTCNN and the centre-crop fallback), from fresh caches, on the checked
    folds: each pair's verdict against the committed fold threshold reproduces the committed fold
    accuracy and its misclassified pairs with their scores (the full 10-fold run, ~2.5 minutes, is
    the README's `faceverify eval lfw`)."""
    from faceverify.evaluation import lfw
    from faceverify.evaluation.run import EvalOptions, features_for
    from faceverify.models import resolve_model
    from faceverify.paths import lfw_root

    committed = json.loads((DEFAULT_MODEL_DIR / "report" / "lfw.json").read_text())
    assert committed["pairs"] == 6000 and len(committed["folds"]) == len(committed["fold_thresholds"]) == 10
    model = resolve_model(DEFAULT_MODEL_DIR)
    options = EvalOptions(cache=tmp_path / "cache").for_model(model)  # `faceverify eval lfw`'s options, recorded settings
    assert (options.flip, options.center, options.pca, options.metric) == (committed["flip"], committed["center"], committed["pca"],
                                                                      committed["metric"]) == ("none", False, None, "cosine")
    # without centring or PCA a pair's score in every fold is the plain cosine of its two features
    pairs = lfw.read_pairs(lfw_root() / "pairs.txt")
    chosen = np.flatnonzero(np.isin(pairs.folds + 1, CHECKED_FOLDS))
    left, right = [pairs.left[i] for i in chosen], [pairs.right[i] for i in chosen]
    feats, _ = features_for(model, options, lfw_root() / "images", list(dict.fromkeys(left + right)))
    scores = lfw.cosine_scores(feats.vectors(left, options.flip), feats.vectors(right, options.flip))
    folds, same = pairs.folds[chosen] + 1, pairs.same[chosen]
    thresholds = np.array(committed["fold_thresholds"])[folds - 1]  # each fold's, from its 9 other folds
    correct = np.where(same, scores > thresholds, scores < thresholds)  # strict on both sides, as the protocol
    for fold in CHECKED_FOLDS:
        accuracy = correct[folds == fold].mean()
        assert accuracy == pytest.approx(committed["folds"][fold - 1], abs=1.5 / (folds == fold).sum()), (fold, accuracy)  # +-1 pair
    wrong = {int(chosen[i]) + 1: float(scores[i]) for i in np.flatnonzero(~correct)}  # 1-based pair numbers, as stored
    stored_wrong = {r["pair"]: r["score"] for r in committed["misclassified_pairs"]["pairs"] if r["fold"] in CHECKED_FOLDS}
    assert len(set(wrong) ^ set(stored_wrong)) <= 1, (sorted(wrong), sorted(stored_wrong))
    for pair in set(wrong) & set(stored_wrong):
        assert wrong[pair] == pytest.approx(stored_wrong[pair], abs=1e-4), pair
    assert abs(committed["accuracy_mean"] - manifest["lfw_view2"]["accuracy_mean"]) <= 1e-9  # the card shows the report's
