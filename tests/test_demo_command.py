"""The README's main command (`make demo`): `faceverify verify` on two LFW photos with no --model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from faceverify.verify import default_model_path

REPO = Path(__file__).resolve().parents[1]


def test_verify_with_the_embedded_default(lfw_images):
    a = lfw_images / "Colin_Powell" / "Colin_Powell_0001.jpg"
    b = lfw_images / "Colin_Powell" / "Colin_Powell_0002.jpg"
    result = subprocess.run([sys.executable, "-m", "faceverify", "verify", str(a), str(b)], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    out = json.loads(result.stdout)
    if default_model_path().exists():
        assert {"similarity", "threshold", "same_person"} <= out.keys()
    else:  # before a model ships: the detections and the aligned crops, and no invented verdict
        assert "same_person" not in out and "does not exist yet" in out["note"]
        for face in out["faces"]:
            assert face["source"] == "mtcnn" and face["score"] >= 0.95
            assert np.asarray(Image.open(face["aligned_crop"])).shape == (112, 96, 3)
