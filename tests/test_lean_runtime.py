"""The base install's runtime: verify and serve without torch, one warp per face, a clean start.

"Without torch" is checked in a subprocess whose ``sys.modules`` holds None for torch,
torchvision and facenet_pytorch (``import torch`` then fails as it does where torch is not
installed), on the shipped default model and MTCNN's ONNX files."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import pytest

from faceverify.paths import DEFAULT_MODEL_DIR, REPO_ROOT

POISON = "import sys\nfor _m in ('torch', 'torchvision', 'facenet_pytorch'):\n    sys.modules[_m] = None\n"


def run_without_torch(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", POISON + code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)


def test_the_verify_serve_and_gallery_paths_import_without_torch():
    proc = run_without_torch("import faceverify.verify, faceverify.service.app, faceverify.commands.serve, faceverify.gallery, "
                             "faceverify.detect, faceverify.mtcnn_onnx, faceverify.embedder, faceverify.evaluation.lfw\n"
                             "print('ok')")
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


def test_a_pair_is_verified_without_torch_and_torch_only_features_say_what_to_install(lfw_images):
    a, b = lfw_images / "Colin_Powell" / "Colin_Powell_0001.jpg", lfw_images / "Colin_Powell" / "Colin_Powell_0002.jpg"
    c = lfw_images / "Serena_Williams" / "Serena_Williams_0001.jpg"
    code = f"""
import json
from faceverify.errors import ConfigError
from faceverify.verify import Verifier
v = Verifier.from_model()
out = {{"same": v.verify({str(a)!r}, {str(b)!r})["same_person"], "different": v.verify({str(a)!r}, {str(c)!r})["same_person"],
       "name": v.name, "torch_loaded": "torch" in [m for m, mod in sys.modules.items() if mod is not None]}}
try:
    Verifier.from_model(runtime="torch")
except ConfigError as exc:
    out["torch_error"] = exc.message
print(json.dumps(out))
"""
    proc = run_without_torch(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["same"] is True and out["different"] is False
    assert out["name"].startswith("onnx:") and not out["torch_loaded"]
    assert "pip install 'faceverify[train]'" in out["torch_error"]


@pytest.mark.parametrize("runtime", ["onnx", pytest.param("torch", marks=pytest.mark.skipif(
    __import__("importlib").util.find_spec("torch") is None, reason="the torch runtime needs the [train] extra"))])
def test_one_verify_of_a_pair_warps_each_face_once(runtime, lfw_images, monkeypatch):
    from faceverify.verify import Verifier

    verifier = Verifier.from_model(runtime=runtime)
    a, b = lfw_images / "Colin_Powell" / "Colin_Powell_0001.jpg", lfw_images / "Colin_Powell" / "Colin_Powell_0002.jpg"
    calls = []
    real = cv2.warpAffine

    def counting(*args, **kwargs):
        calls.append(args[2] if len(args) > 2 else kwargs.get("dsize"))
        return real(*args, **kwargs)

    monkeypatch.setattr(cv2, "warpAffine", counting)
    result = verifier.verify(a, b)
    assert len(calls) == 2, calls
    assert result["same_person"] is True
    assert [f["source"] for f in result["faces"]] == ["mtcnn", "mtcnn"]


def test_serve_starts_clean_without_loading_torch(tmp_path, lfw_images):
    """The real server on loopback, the default model: no warning that the OpenMP wait policy came
    too late, and torch never loaded (the /health runtime block has no torch threads)."""
    import httpx
    from service_fixtures.server import LiveServer

    with LiveServer(DEFAULT_MODEL_DIR, tmp_path / "gallery", "--log-level", "info") as server:
        health = httpx.get(server.url + "/health", timeout=10).json()
        image = (lfw_images / "Colin_Powell" / "Colin_Powell_0001.jpg").read_bytes()
        r = httpx.post(server.url + "/verify", files={"image1": image, "image2": image}, timeout=120)
    log = server.log_path.read_text(errors="replace")
    assert r.status_code == 200 and r.json()["same_person"] is True, r.text
    assert "OpenMP wait policy" not in log and "may not apply" not in log, log[-3000:]
    assert health["runtime"]["torch_threads"] is None and health["runtime"]["omp_wait_policy"] == "PASSIVE", health


def test_a_stale_onnx_export_is_not_served_in_place_of_its_checkpoint(tmp_path, caplog):
    """model.onnx stands in for model.pt only while it is that checkpoint's export."""
    import shutil

    from faceverify.errors import ConfigError
    from faceverify.models import resolve_model
    from faceverify.runtime import runtime_model

    model = tmp_path / "m"
    model.mkdir()
    for name in ("model.pt", "model.onnx", "calibration.json", "MODEL.json"):
        shutil.copy(DEFAULT_MODEL_DIR / name, model / name)
    ref = resolve_model(model)
    assert runtime_model(ref).kind == "onnx" and runtime_model(ref, "torch").kind == "torch"
    with open(model / "model.pt", "ab") as fh:  # another checkpoint now (a retrained model, say)
        fh.write(b"\0")
    ref = resolve_model(model)
    assert runtime_model(ref, "auto").kind == "torch" and "stale" in caplog.text
    with pytest.raises(ConfigError, match="faceverify export"):
        runtime_model(ref, "onnx")
