"""``faceverify verify A B [--model PATH]`` (same pipeline as the service, no server), and
``faceverify serve``: its options, generated from the service settings, and its start-up errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from service_fixtures.model import default_operating_point, dim, lfw_image

from faceverify.commands import verify as verify_cli
from faceverify.commands.serve import build_parser as serve_parser
from faceverify.commands.serve import given_settings
from faceverify.paths import REPO_ROOT
from faceverify.service.settings import Settings, setting

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


def squeezed(text: str) -> str:
    return "".join(text.split())  # argparse wraps help lines (and breaks words at hyphens)


def test_every_service_setting_is_a_serve_option_helped_by_its_description():
    """The settings model is the one declaration: each field is an option of `faceverify serve`
    (or, API keys and the PostgreSQL URL, an environment variable), and the help says what the
    field's description, default and environment variable say."""
    parser = serve_parser()
    help_text = squeezed(parser.format_help())
    flags = {option for action in parser._actions for option in action.option_strings} - {"-h", "--help"}
    declared = {name: Settings.declared(name) for name in Settings.model_fields}
    assert len(declared) >= 20
    assert flags == {d.flag for d in declared.values() if d.flag}  # no option declared anywhere else
    for name, field in Settings.model_fields.items():
        assert field.description and squeezed(field.description) in help_text, name
        if declared[name].env:
            assert declared[name].env in help_text, name
        if declared[name].flag is None:  # not on the command line: the environment's
            assert declared[name].env, name
    for flag in ("--model", "--gallery", "--host", "--port", "--auth", "--max-body-mb", "--max-pixels", "--max-batch",
                 "--batch-wait-ms", "--max-queue", "--flat-max", "--nprobe", "--pca", "--flip", "--device", "--runtime",
                 "--torch-threads", "--log-level"):  # the documented and deployed flags keep their names
        assert flag in flags, flag
    assert "FACEVERIFY_API_KEY_FILE" in help_text


def test_serve_options_become_settings_over_the_environment(monkeypatch):
    monkeypatch.setenv("FACEVERIFY_AUTH", "all")
    monkeypatch.setenv("FACEVERIFY_RUNTIME", "onnx")
    monkeypatch.setenv("FACEVERIFY_TORCH_THREADS", "3")
    monkeypatch.setenv("FACEVERIFY_GALLERY_URL", "postgresql://env@db:5432/faceverify")
    monkeypatch.setenv("FACEVERIFY_API_KEY", "k1, k2")
    monkeypatch.delenv("FACEVERIFY_API_KEY_FILE", raising=False)
    defaults = Settings.from_env(**given_settings(serve_parser().parse_args([])))
    assert (defaults.auth_scope, defaults.runtime, defaults.torch_threads) == ("all", "onnx", 3)
    assert defaults.gallery_location == "postgresql://env@db:5432/faceverify" and defaults.api_keys == ["k1", "k2"]
    assert (defaults.host, defaults.port, defaults.max_body_bytes, defaults.log_level) == ("127.0.0.1", 8000, 16 << 20, "info")
    args = serve_parser().parse_args(["--auth", "mutations", "--runtime", "torch", "--max-body-mb", "0.5", "--gallery", "g",
                                      "--decode-concurrency", "2", "--port", "9000", "--flip", "sum"])
    given = Settings.from_env(**given_settings(args))  # a flag beats the environment
    assert (given.auth_scope, given.runtime, given.max_body_bytes, given.decode_concurrency) == ("mutations", "torch", 1 << 19, 2)
    assert given.gallery_location == Path("g") and given.port == 9000 and given.flip == "sum"
    url = Settings.from_env(**given_settings(serve_parser().parse_args(["--gallery", "postgresql://cli@db/fv"])))
    assert url.gallery_url == "postgresql://cli@db/fv"
    with pytest.raises(SystemExit):
        serve_parser().parse_args(["--flip", "twice"])  # choices come from the field's type


def test_a_boolean_setting_is_a_flag_and_its_negation():
    class WithSwitch(Settings):
        warm_up: bool = setting(False, "embed one blank image before binding")

    parser = serve_parser(WithSwitch)
    assert "--no-warm-up" in parser.format_help()
    assert given_settings(parser.parse_args(["--warm-up"]), WithSwitch)["warm_up"] is True
    assert given_settings(parser.parse_args(["--no-warm-up"]), WithSwitch)["warm_up"] is False
    assert given_settings(parser.parse_args([]), WithSwitch)["warm_up"] is None  # not given: the environment's or the default


def test_the_configuration_table_lists_every_serve_option_and_variable():
    table = (REPO_ROOT / "docs" / "service.md").read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    for name in Settings.model_fields:
        declared = Settings.declared(name)
        for word in (declared.flag, declared.env):
            assert word is None or f"`{word}" in table, (name, word)
