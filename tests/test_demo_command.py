"""The README's main command (`make demo`): `faceverify verify` on two LFW photos with no --model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from faceverify.paths import DEFAULT_MODEL_DIR

REPO = Path(__file__).resolve().parents[1]


def verify(a: Path, b: Path) -> dict:
    result = subprocess.run([sys.executable, "-m", "faceverify", "verify", str(a), str(b)], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def test_the_readme_pairs_get_the_right_verdicts_from_the_embedded_default(lfw_images):
    """`make demo`: the shipped model (no --model) accepts Colin Powell vs Colin Powell and rejects
    Colin Powell vs Serena Williams, at its calibrated threshold."""
    assert DEFAULT_MODEL_DIR.exists(), "models/default is missing"
    powell = lfw_images / "Colin_Powell" / "Colin_Powell_0001.jpg"
    same = verify(powell, lfw_images / "Colin_Powell" / "Colin_Powell_0002.jpg")
    different = verify(powell, lfw_images / "Serena_Williams" / "Serena_Williams_0001.jpg")
    assert same["same_person"] is True and different["same_person"] is False
    assert same["similarity"] > same["threshold"] > different["similarity"]
    assert same["threshold_source"]["source"] == "calibration"
