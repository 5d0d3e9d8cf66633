"""The model the service tests judge verdicts with: the shipped ``models/default``, a fixed
artefact (weights and calibration committed), never a model trained during the test run.

Why: a verdict is a similarity against a threshold, and a network trained in the session lands
where the machine's floating-point path (CPU, BLAS kernel) takes it; a fixed model gives the same
similarities everywhere to ~1e-5, far inside the margins of the pairs below (at the default
operating point the closest is ~0.007 from the threshold). LFW is not in its training data, so
every LFW photo is new to it."""

from __future__ import annotations

import json
from pathlib import Path

from faceverify.paths import DEFAULT_MODEL_DIR, lfw_root

# LFW identities with more than 52 photos: photos 49..52 of each are the tests' pairs and queries,
# photos 1..PHOTOS_PER_ID the enrollment bursts (distinct photos)
IDENTITIES = ["George_W_Bush", "Colin_Powell", "Tony_Blair", "Donald_Rumsfeld", "Gerhard_Schroeder", "Ariel_Sharon"]
PHOTOS_PER_ID = 40


def lfw_image(name: str, number: int) -> Path:
    return lfw_root() / "images" / name / f"{name}_{number:04d}.jpg"


def served_model() -> Path:
    """``models/default``, checked complete (weights, card, calibration)."""
    missing = [n for n in ("model.pt", "MODEL.json", "calibration.json") if not (DEFAULT_MODEL_DIR / n).is_file()]
    assert not missing, f"{DEFAULT_MODEL_DIR} lacks {missing}: the shipped default model is incomplete"
    return DEFAULT_MODEL_DIR


def card() -> dict:
    return json.loads((served_model() / "MODEL.json").read_text())


def calibration() -> dict:
    return json.loads((served_model() / "calibration.json").read_text())


def default_operating_point() -> str:
    return calibration().get("default_operating_point", "far_1e-3")


def dim() -> int:
    """The length of the served model's embeddings."""
    return int(card()["backbone"]["kwargs"]["embedding_dim"])


def crop_shape() -> tuple[int, int]:
    """(height, width) of the served model's aligned crops."""
    height, width = card()["template"].split("x")
    return int(height), int(width)
