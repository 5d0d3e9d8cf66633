"""Errors in one place (``faceverify/errors.py``): every typed error is defined there with its HTTP
status; bad caller input on the library's user-facing paths is a typed error (a ``ValueError``
too where callers caught that before); a command's exit status follows one table."""

from __future__ import annotations

import ast
import json

import numpy as np
import pytest

import faceverify.errors as errors
from faceverify.errors import (
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_USAGE,
    HTTP_STATUS,
    CheckpointError,
    ConfigError,
    FaceverifyError,
    InvalidIdentifierError,
    InvalidInputError,
    NoFaceError,
    UnknownOperatingPointError,
    UnreadableImageError,
    exit_status,
)
from faceverify.align import align_face
from faceverify.detect import Face, select_face
from faceverify.embedder import combine_flip
from faceverify.gallery import PCAProjection, validate_identifier
from faceverify.image import load_image
from faceverify.landmarks import read_landmark_file
from faceverify.paths import REPO_ROOT
from faceverify.face_aligner import FaceAligner

ERROR_CLASSES = {name for name, obj in vars(errors).items() if isinstance(obj, type) and issubclass(obj, FaceverifyError)}


def test_every_typed_error_is_defined_in_errors_py():
    """No module of the library defines a subclass of an error of faceverify/errors.py."""
    elsewhere = []
    for path in sorted((REPO_ROOT / "faceverify").rglob("*.py")):
        if path.name == "errors.py" and path.parent.name == "faceverify":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                bases = {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases}
                if bases & ERROR_CLASSES:
                    elsewhere.append(f"{path.relative_to(REPO_ROOT)}: {node.name}")
    assert not elsewhere
    assert {"GalleryError", "NotFoundError", "ConflictError", "InvalidIdentifierError", "DimensionMismatchError",
            "UnknownOperatingPointError", "OverloadedError", "UnauthorizedError"} <= ERROR_CLASSES


def test_each_error_carries_its_status_from_the_one_table():
    assert NoFaceError("x").status == 422 and UnreadableImageError("x").status == 400
    assert errors.NotFoundError("x").status == 404 and errors.StoreUnavailableError("x").status == 503
    assert CheckpointError("x").status is None and ConfigError("x").status is None  # never sent: internal_error
    for name in ERROR_CLASSES:
        cls = getattr(errors, name)
        assert cls("x").status == HTTP_STATUS.get(cls.code), name


def _unreadable_image(tmp_path):
    path = tmp_path / "bad.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    load_image(path)


def _bad_landmark_file(tmp_path):
    path = tmp_path / "lm.txt"
    path.write_text("a/a_0001.jpg 1 2 3 4 5 6 7 8 nine ten\n")
    read_landmark_file(path)


BLANK = np.zeros((50, 50, 3), np.uint8)
TWO_FACES = [Face(np.array([0, 0, 9, 9], np.float32), 0.99, np.zeros((5, 2), np.float32))] * 2

# (what, a call on a path user input reaches, the typed error, its code)
INPUTS = [
    ("landmarks_nan", lambda tmp: align_face(BLANK, np.full((5, 2), np.nan)), InvalidInputError, "validation_error"),
    ("template_name", lambda tmp: FaceAligner(template="100x100"), InvalidInputError, "validation_error"),
    ("template_pad", lambda tmp: align_face(BLANK, np.ones((5, 2)), "84x72", pad=1), InvalidInputError, "validation_error"),
    ("fallback", lambda tmp: FaceAligner(fallback="guess"), InvalidInputError, "validation_error"),
    ("selection_policy", lambda tmp: select_face(TWO_FACES, BLANK.shape, "biggest"), InvalidInputError, "validation_error"),
    ("flip_mode", lambda tmp: combine_flip(np.ones((1, 2)), None, "mirror"), InvalidInputError, "validation_error"),
    ("pca_components", lambda tmp: PCAProjection.fit(np.eye(4, 8, dtype=np.float32), 9), InvalidInputError, "validation_error"),
    ("gallery_identifier", lambda tmp: validate_identifier("../etc", "collection"), InvalidIdentifierError, "invalid_identifier"),
    ("landmark_file", _bad_landmark_file, ConfigError, "bad_config"),
    ("image_bytes", _unreadable_image, UnreadableImageError, "unreadable_image"),
]


@pytest.mark.parametrize("what,call,error,code", INPUTS, ids=[i[0] for i in INPUTS])
def test_bad_input_is_a_typed_error_never_a_bare_value_error(tmp_path, what, call, error, code):
    with pytest.raises(FaceverifyError) as caught:
        call(tmp_path)
    assert type(caught.value) is error and caught.value.code == code and caught.value.message
    if error is InvalidInputError:
        assert isinstance(caught.value, ValueError)  # what callers caught before, still caught


def test_verifier_refuses_bad_thresholds_operating_points_and_policies():
    """The Verifier's own checks, before any model work (a verifier without a model file)."""
    from faceverify.loaders import load_embedder
    from faceverify.calibration import Calibration
    from faceverify.verify import Verifier

    verifier = Verifier(load_embedder(REPO_ROOT / "models" / "default"), Calibration())
    for bad in (float("nan"), float("inf"), "0.5"):
        with pytest.raises(InvalidInputError, match="finite number") as caught:
            verifier.threshold(bad)
        assert caught.value.details["field"] == "threshold"
    with pytest.raises(UnknownOperatingPointError, match="far_1e-3"):
        verifier.threshold(None, "far_1e-9")
    with pytest.raises(InvalidInputError, match="selection policy"):
        verifier.embed_faces([np.zeros((64, 64, 3), np.uint8)], "biggest")
    assert verifier.threshold(0.25).value == 0.25


def test_exit_status_table():
    assert (EXIT_OK, EXIT_REFUSED, EXIT_USAGE) == (0, 1, 2)
    assert exit_status(NoFaceError("x")) == exit_status(UnreadableImageError("x")) == EXIT_REFUSED
    for exc in (CheckpointError("x"), ConfigError("x"), InvalidInputError("x"), errors.DataNotFoundError("x")):
        assert exit_status(exc) == EXIT_USAGE


def test_commands_follow_the_exit_status_table(tmp_path, capsys):
    """Through the ``faceverify`` command's dispatch: a missing model (or recipe, or source folder)
    is a usage error for every command, and the one message, ``faceverify <command>: ...`` on stderr,
    names the path; a refused image is EXIT_REFUSED (tests/test_verify_and_serve_commands.py)."""
    from faceverify import cli
    from faceverify.commands.export import main as export_main

    missing = str(tmp_path / "no_such_model.pt")
    export_argv = [missing, str(tmp_path / "out.onnx")]
    runs = {
        "verify": (missing, lambda: cli.main(["verify", "a.jpg", "b.jpg", "--model", missing])),
        "eval": (missing, lambda: cli.main(["eval", "lfw", "--model", missing, "--out", str(tmp_path)])),
        # `faceverify export` once the one CLI has it, else its module's main
        "export": (missing, lambda: cli.main(["export", *export_argv]) if "export" in cli.SUBCOMMANDS else export_main(export_argv)),
        "serve": (missing, lambda: cli.main(["serve", "--model", missing, "--gallery", str(tmp_path / "g"), "--port", "1"])),
        "train": (str(tmp_path / "no_recipe.yaml"),
                  lambda: cli.main(["train", "--config", str(tmp_path / "no_recipe.yaml"), "--out", str(tmp_path / "run")])),
        "prep": (str(tmp_path / "no_source"), lambda: cli.main(["prep", str(tmp_path / "no_source"), str(tmp_path / "packed")])),
        "gallery fit-pca": (missing, lambda: cli.main(["gallery", "fit-pca", str(tmp_path), "--model", missing,
                                                        "--out", str(tmp_path / "pca.npz")])),
    }
    for name, (path, run) in runs.items():
        status = run()
        out = capsys.readouterr()
        assert status == EXIT_USAGE, (name, out)
        assert f"{path} does not exist" in out.out + out.err, name
        if name == "verify":  # one JSON object, with the typed error's code
            assert json.loads(out.out)["error"]["code"] == "bad_checkpoint"
        else:
            assert out.err.startswith(f"faceverify {name}: ") and out.err.count("\n") == 1, (name, out.err)
    assert cli.main(["nonsense"]) == EXIT_USAGE
    with pytest.raises(SystemExit) as usage:  # argparse's own usage error
        cli.main(["verify", "a.jpg"])
    assert usage.value.code == EXIT_USAGE


def test_missing_data_says_what_is_missing_and_how_to_point_at_it(tmp_path, monkeypatch, capsys):
    """Data paths come from options or FACEVERIFY_DATA: a wrong FACEVERIFY_DATA, or a data root
    without the part a command needs, is a usage error naming the missing path and the remedy."""
    from faceverify import cli
    from faceverify.paths import data_root, lfw_root

    monkeypatch.setenv("FACEVERIFY_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(errors.DataNotFoundError, match=r"FACEVERIFY_DATA=.*nowhere is not a folder.*lfw/ and train/"):
        data_root()
    monkeypatch.setenv("FACEVERIFY_DATA", str(tmp_path))  # a folder, but without lfw/
    with pytest.raises(errors.DataNotFoundError, match=r"lfw does not exist under the data root.*FACEVERIFY_DATA.*option"):
        lfw_root()
    status = cli.main(["eval", "lfw", "--out", str(tmp_path / "out")])  # the default model, the default pairs file
    out = capsys.readouterr()
    assert status == EXIT_USAGE and f"{tmp_path / 'lfw'} does not exist" in out.out + out.err, out
