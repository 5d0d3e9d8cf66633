"""The documented Python API (README, "Python API"): ``from faceverify import Verifier``,
``Verifier.from_model()`` on the shipped default model, ``verify`` and ``embed`` on paths, bytes
and arrays, typed errors — and the README's example itself, run as written."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from faceverify.errors import NoFaceError, UnsupportedImageError
from faceverify.image import load_image
from faceverify.paths import DEFAULT_MODEL_DIR, data_root
from faceverify.calibration import DEFAULT_OPERATING_POINT

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def verifier():
    from faceverify import Verifier

    return Verifier.from_model()


@pytest.fixture(scope="module")
def photos(lfw_images):
    return (lfw_images / "Colin_Powell" / "Colin_Powell_0001.jpg", lfw_images / "Colin_Powell" / "Colin_Powell_0002.jpg",
            lfw_images / "Serena_Williams" / "Serena_Williams_0001.jpg")


def card_dim() -> int:
    """The embedding size the default model's card states."""
    return json.loads((DEFAULT_MODEL_DIR / "MODEL.json").read_text())["backbone"]["kwargs"]["embedding_dim"]


def test_the_interface_one_liner():
    code = "from faceverify import Verifier; v = Verifier.from_model(); print(v.dim, v.model_id)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == [str(card_dim()), "default"]


def test_verify_takes_paths_bytes_and_arrays_alike(verifier, photos):
    a, b, _ = photos
    by_path = verifier.verify(a, str(b))
    by_bytes = verifier.verify(a.read_bytes(), b.read_bytes())
    by_array = verifier.verify(load_image(a), load_image(b))
    assert by_path["same_person"] is by_bytes["same_person"] is by_array["same_person"] is True
    assert by_bytes["similarity"] == pytest.approx(by_path["similarity"], abs=1e-6)
    assert by_array["similarity"] == pytest.approx(by_path["similarity"], abs=1e-6)
    point = verifier.calibration.default or DEFAULT_OPERATING_POINT  # the model's own default, else far_1e-3
    assert by_path["threshold_source"] == {"source": "calibration", "operating_point": point, "file": "calibration.json"}
    assert by_path["threshold"] == verifier.calibration.thresholds[point]


def test_embed_is_a_unit_vector_of_the_model_dim_and_agrees_with_verify(verifier, photos):
    a, _, serena = photos
    face = verifier.embed(a)
    assert face.vector.shape == (verifier.dim,) == (card_dim(),) and face.vector.dtype == np.float32
    assert np.linalg.norm(face.vector) == pytest.approx(1.0, abs=1e-5)
    assert face.aligned.source == "mtcnn" and face.aligned.faces_found == 1
    np.testing.assert_allclose(verifier.embed(a.read_bytes()).vector, face.vector, atol=1e-6)
    np.testing.assert_allclose(verifier.embed(load_image(a)).vector, face.vector, atol=1e-6)
    other = verifier.embed(serena)
    verdict = verifier.verify(a, serena)
    assert float(face.vector @ other.vector) == pytest.approx(verdict["similarity"], abs=1e-5)
    assert verdict["same_person"] is False


def test_unusable_input_raises_typed_errors(verifier):
    with pytest.raises(NoFaceError) as no_face:
        verifier.embed(np.zeros((120, 120, 3), np.uint8))
    assert no_face.value.code == "no_face"
    with pytest.raises(UnsupportedImageError, match="HxWx3 uint8 RGB"):
        verifier.embed(np.zeros((120, 120), np.uint8))  # grayscale array: refused, not guessed
    with pytest.raises(UnsupportedImageError):
        verifier.embed(np.zeros((120, 120, 3), np.float32))


def test_public_methods_are_documented():
    from faceverify import Verifier

    for name in ("from_model", "verify", "embed", "embed_faces", "compare", "threshold"):
        doc = getattr(Verifier, name).__doc__ or ""
        assert len(doc.split()) >= 8, f"Verifier.{name} has no real docstring"
    assert "embed" in Verifier.__doc__ and "from_model" in Verifier.__doc__


def test_the_readme_example_runs_as_written():
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Python API", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    # the example reads ../shared/data beside the checkout; elsewhere, the data root in use
    code = code.replace('"../shared/data/', f'"{data_root()}/')
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    # the printed values are the ones its comments promise
    promised = [c.split("#", 1)[1].split(":")[0].strip() for c in code.splitlines() if "print(" in c and "#" in c]
    assert result.stdout.splitlines() == promised
