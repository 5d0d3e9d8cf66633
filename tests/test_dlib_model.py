"""dlib's descriptor served through faceverify (`--model dlib`): the same MTCNN detection, dlib's
150x150 chip cut from MTCNN's five points, cosine against the calibration in models/dlib/ — in the
CLI and in a real server on loopback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

pytest.importorskip("dlib", reason="dlib is installed by `scripts/setup.sh --test` (the [dlib] extra)")

from faceverify.image import load_image  # noqa: E402
from faceverify.paths import DLIB_MODEL_DIR  # noqa: E402
from faceverify.verify import Verifier  # noqa: E402

from service_fixtures.server import LiveServer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def pairs(lfw_images: Path):
    powell = lfw_images / "Colin_Powell" / "Colin_Powell_0001.jpg"
    return powell, lfw_images / "Colin_Powell" / "Colin_Powell_0002.jpg", lfw_images / "Serena_Williams" / "Serena_Williams_0001.jpg"


def test_models_dlib_holds_a_calibration_measured_on_view1():
    calibration = json.loads((DLIB_MODEL_DIR / "calibration.json").read_text())
    assert "View 1" in calibration["source"] and calibration["metric"] == "cosine"
    t = calibration["thresholds"]
    assert -1 < t["far_1e-2"] < t["far_1e-3"] < t["far_1e-4"] < 1
    card = json.loads((DLIB_MODEL_DIR / "MODEL.json").read_text())
    assert card["licence"].startswith("public domain")


@pytest.mark.slow  # two CLI processes, each loading MTCNN and dlib
def test_verify_cli_with_dlib(lfw_images):
    powell, powell2, serena = pairs(lfw_images)
    out = []
    for other in (powell2, serena):
        result = subprocess.run([sys.executable, "-m", "faceverify", "verify", str(powell), str(other), "--model", "dlib"],
                                cwd=REPO, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
        out.append(json.loads(result.stdout))
    same, different = out
    assert same["same_person"] is True and different["same_person"] is False
    assert same["threshold_source"]["source"] == "calibration"
    assert "dlib" in same["model"] and str(REPO) not in json.dumps(same)


def test_dlib_verifier_embeds_from_given_landmarks(lfw_images):
    """The served pipeline: MTCNN's points -> dlib chip; its verdicts agree with the embedder's own."""
    verifier = Verifier.from_model("dlib")
    powell, powell2, serena = pairs(lfw_images)
    result = verifier.verify(powell, powell2)
    assert result["same_person"] and result["faces"][0]["source"] == "mtcnn"
    a, b = (verifier.embed(load_image(p)) for p in (powell, serena))
    assert a.vector.shape == (128,) and np.isclose(np.linalg.norm(a.vector), 1.0, atol=1e-5)
    assert float(a.vector @ b.vector) < verifier.threshold().value


@pytest.mark.slow  # a server start-up
def test_serve_with_dlib(lfw_images, tmp_path):
    powell, powell2, serena = pairs(lfw_images)
    server = LiveServer("dlib", tmp_path / "gallery").start()
    try:
        files = {"image1": powell.read_bytes(), "image2": powell2.read_bytes()}
        r = httpx.post(server.url + "/verify", files=files, headers=server.auth, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["same_person"] is True
        files = {"image1": powell.read_bytes(), "image2": serena.read_bytes()}
        r = httpx.post(server.url + "/verify", files=files, headers=server.auth, timeout=60)
        assert r.status_code == 200 and r.json()["same_person"] is False
    finally:
        server.stop()
