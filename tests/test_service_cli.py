"""``faceverify verify A B [--model PATH]`` (same pipeline as the service, no server) and the
start-up errors of ``faceverify serve``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from service_fixtures.model import default_operating_point, dim, lfw_image

from faceverify.commands import verify as verify_cli
from faceverify.paths import REPO_ROOT

pytestmark = pytest.mark.timeout(600)


def run_cli(capsys, *argv) -> tuple[int, dict]:
    code = verify_cli.main([str(a) for a in argv])
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1  # exactly one JSON object
    return code, json.loads(out[0])


def test_verify_cli_through_the_faceverify_command(served_model):
    """The acceptance interface: the installed entry point's dispatch, a real subprocess."""
    run = subprocess.run([sys.executable, "-m", "faceverify", "verify", str(lfw_image("George_W_Bush", 49)),
                          str(lfw_image("George_W_Bush", 50)), "--model", str(served_model)],
                         capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert {"similarity", "threshold", "same_person"} <= set(out)
    assert out["same_person"] is True and out["similarity"] > out["threshold"]
    assert out["threshold_source"] == {"source": "calibration", "operating_point": default_operating_point(),
                                       "file": "calibration.json"}  # a name, never a server path


def test_verify_cli_operating_points_and_override(served_model, capsys):
    calib = json.loads((served_model / "calibration.json").read_text())["thresholds"]
    a, b = lfw_image("George_W_Bush", 49), lfw_image("Donald_Rumsfeld", 49)
    code, out = run_cli(capsys, a, b, "--model", served_model, "--operating-point", "best_accuracy")
    assert code == 0 and out["same_person"] is False and out["threshold"] == pytest.approx(calib["best_accuracy"])
    code, low = run_cli(capsys, a, b, "--model", served_model, "--threshold", "-1")
    assert code == 0 and low["same_person"] is True and low["threshold_source"]["source"] == "request"
    assert low["similarity"] == pytest.approx(out["similarity"], abs=1e-6)


def test_the_models_default_operating_point_is_used_unless_a_request_names_one(served_model, capsys, tmp_path):
    """calibration.json's default_operating_point (chosen on View 1) replaces far_1e-3 as the default."""
    import shutil

    model = tmp_path / "model"
    shutil.copytree(served_model, model, ignore=shutil.ignore_patterns("report", "training"))
    cal = json.loads((model / "calibration.json").read_text())
    cal["default_operating_point"] = "far_1e-4"
    cal["thresholds"]["far_1e-4"] = cal["thresholds"]["far_1e-3"] + 0.01
    (model / "calibration.json").write_text(json.dumps(cal))
    a, b = lfw_image("George_W_Bush", 49), lfw_image("George_W_Bush", 50)
    code, out = run_cli(capsys, a, b, "--model", model)
    assert code == 0 and out["threshold_source"]["operating_point"] == "far_1e-4"
    assert out["threshold"] == pytest.approx(cal["thresholds"]["far_1e-4"])
    code, out = run_cli(capsys, a, b, "--model", model, "--operating-point", "far_1e-3")
    assert code == 0 and out["threshold"] == pytest.approx(cal["thresholds"]["far_1e-3"])
    cal["default_operating_point"] = "far_1e-9"  # a default without a threshold is refused at load
    (model / "calibration.json").write_text(json.dumps(cal))
    code, out = run_cli(capsys, a, b, "--model", model)
    assert code == 2 and "default_operating_point" in out["error"]["message"]


def test_default_operating_point_is_the_strictest_within_a_point_of_the_best():
    from faceverify.calibration import default_operating_point

    at = {"far_1e-2": 0.975, "far_1e-3": 0.962, "far_1e-4": 0.90, "best_accuracy": 0.98}
    assert default_operating_point(at, 0.98) == "far_1e-2"
    assert default_operating_point(at, 0.97) == "far_1e-3"
    assert default_operating_point({"far_1e-2": 0.80, "far_1e-3": 0.66}, 0.91) == "far_1e-2"  # none close: the best


def test_verify_cli_refused_input_is_typed_json(served_model, capsys, tmp_path):
    text = tmp_path / "note.jpg"
    text.write_text("not an image\n")
    code, out = run_cli(capsys, text, lfw_image("George_W_Bush", 49), "--model", served_model)
    assert code == 1 and out["error"]["code"] == "unsupported_media_type"
    code, out = run_cli(capsys, tmp_path / "missing.jpg", lfw_image("George_W_Bush", 49), "--model", served_model)
    assert code == 1 and out["error"]["code"] == "unreadable_image"
    code, out = run_cli(capsys, text, text, "--model", tmp_path / "no_model.pt")
    assert code == 2 and out["error"]["code"] == "bad_checkpoint"


def test_serve_refuses_to_start_without_a_model(tmp_path):
    run = subprocess.run([sys.executable, "-m", "faceverify", "serve", "--model", str(tmp_path / "nope.pt"),
                          "--gallery", str(tmp_path / "g"), "--port", "1"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "nope.pt does not exist" in run.stderr


def test_serve_refuses_a_gallery_of_another_model(served_model, gallery_store):
    """SQLite directory and PostgreSQL URL alike: a replica started with another model than the
    gallery's exits with status 2 and says why."""
    from faceverify.gallery import Gallery

    Gallery(gallery_store, dim(), "some-other-model:flip=none").close()
    run = subprocess.run([sys.executable, "-m", "faceverify", "serve", "--model", str(served_model),
                          "--gallery", str(gallery_store), "--port", "1"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "not comparable" in run.stderr and "some-other-model" in run.stderr
