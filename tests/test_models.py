"""The one model resolver (``faceverify.models``): a ``.pt`` file, an ``.onnx`` file, a model
folder (with either) and ``dlib`` all go through ``resolve_model`` and ``load_embedder``, with real
weights (a small untrained network, its real ONNX export, dlib's own descriptor); a wrong spec is
a typed error that says what to give; and the library never imports ``bench/``."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from faceverify.embedder import Embedder
from faceverify.loaders import OnnxEmbedder, TorchEmbedder, load_embedder
from faceverify.errors import CheckpointError
from faceverify.models import ModelRef, resolve_model
from faceverify.paths import DEFAULT_MODEL_DIR, DLIB_MODEL_DIR, REPO_ROOT

KWARGS = {"embedding_dim": 32, "input_size": [112, 96], "widths": [8, 16, 16, 32]}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The same small network as a .pt file, a .pt folder, an .onnx file and an .onnx folder."""
    from faceverify.backbones import build_backbone
    from faceverify.checkpoint import inference_state, load_backbone, save_checkpoint
    from faceverify.export import export_onnx, onnx_metadata

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("models")
    net = build_backbone("sphereface20", **KWARGS).eval()
    pt = save_checkpoint(root / "net.pt", inference_state("sphereface20", KWARGS, "112x96", net))
    pt_dir = root / "pt_dir"
    pt_dir.mkdir()
    shutil.copy(pt, pt_dir / "model.pt")
    (pt_dir / "calibration.json").write_text(json.dumps({"metric": "cosine", "thresholds": {"far_1e-3": 0.42}, "flip": "sum"}))
    _, info = load_backbone(pt)
    onnx = export_onnx(net, root / "net.onnx", info.input_size, metadata=onnx_metadata(info))
    onnx_dir = root / "onnx_dir"
    onnx_dir.mkdir()
    shutil.copy(onnx, onnx_dir / "model.onnx")
    return {"pt": pt, "pt_dir": pt_dir, "onnx": onnx, "onnx_dir": onnx_dir}


CROPS = np.random.default_rng(0).integers(0, 256, size=(3, 112, 96, 3), dtype=np.uint8)


@pytest.mark.parametrize("name,kind,embedder", [("pt", "torch", TorchEmbedder), ("pt_dir", "torch", TorchEmbedder),
                                                ("onnx", "onnx", OnnxEmbedder), ("onnx_dir", "onnx", OnnxEmbedder)])
def test_every_file_spec_resolves_and_loads_through_the_one_function(models, name, kind, embedder):
    spec = models[name]
    model = resolve_model(spec)
    assert model.kind == kind and model.path == spec
    assert model.weights.is_file() and model.weights.suffix == (".pt" if kind == "torch" else ".onnx")
    assert model.directory == (spec if spec.is_dir() else spec.parent)
    assert model.calibration_file == model.directory / "calibration.json"
    for given in (spec, str(spec), model):  # a path, a string or the resolved model: the same embedder
        emb = load_embedder(given, flip="sum", device="cpu")  # device: ignored by ONNX, not an error
        assert type(emb) is embedder and isinstance(emb, Embedder)
        assert (emb.feature_dim, emb.dim, emb.flip, emb.aligner.template) == (32, 32, "sum", "112x96")
    # one network, four ways to name it: the same features
    reference = load_embedder(models["pt"]).embed_crops(CROPS)
    assert np.allclose(emb.embed_crops(CROPS), reference, atol=1e-4)


def test_verifier_and_calibration_use_the_resolver(models):
    from faceverify.calibration import Calibration
    from faceverify.verify import Verifier

    verifier = Verifier.from_model(models["pt_dir"])
    assert verifier.model.kind == "torch" and verifier.model.path == models["pt_dir"]
    assert verifier.flip == "sum" and verifier.threshold().value == pytest.approx(0.42)  # the folder's calibration
    assert verifier.model_id == "pt_dir" and len(verifier.sha256) == 64
    assert Verifier.from_model(models["onnx_dir"]).model.kind == "onnx"
    assert Calibration.for_model(models["pt_dir"] / "model.pt").path == models["pt_dir"] / "calibration.json"
    assert Calibration.for_model(models["onnx"]).path is None  # nothing beside it: uncalibrated


def test_the_default_model_and_dlib_are_specs_too():
    default = resolve_model(None)
    assert default == resolve_model(DEFAULT_MODEL_DIR) and default.kind == "torch"
    assert default.weights == DEFAULT_MODEL_DIR / "model.pt"
    for spec in ("dlib", DLIB_MODEL_DIR, str(DLIB_MODEL_DIR)):
        model = resolve_model(spec)
        assert model == ModelRef("dlib", DLIB_MODEL_DIR, DLIB_MODEL_DIR) and str(model) == "dlib"
        assert model.calibration_file.is_file() and model.manifest()["embedder"] == "dlib"


def test_dlib_loads_through_the_same_function():
    pytest.importorskip("dlib")
    pytest.importorskip("face_recognition_models")
    from faceverify.dlib_embedder import DlibEmbedder

    emb = load_embedder("dlib", flip="none", device="cpu")
    assert type(emb) is DlibEmbedder and isinstance(emb, Embedder)
    assert (emb.feature_dim, emb.dim, emb.aligner) == (128, 128, None)
    assert resolve_model("dlib").weights.name == "dlib_face_recognition_resnet_model_v1.dat"
    assert type(load_embedder(DLIB_MODEL_DIR)) is DlibEmbedder


def test_a_wrong_spec_is_a_typed_error_that_says_what_to_give(models, tmp_path):
    from faceverify.checkpoint import load_checkpoint
    from faceverify.verify import Verifier

    missing = tmp_path / "no_such_model.pt"
    for call in (resolve_model, load_embedder, Verifier.from_model, load_checkpoint):
        with pytest.raises(CheckpointError, match=r"no_such_model\.pt does not exist; check the path, or give a checkpoint \(\.pt\), "
                                                  r"an \.onnx file, a model directory .* or a model's name .*'dlib'"):
            call(missing)
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    with pytest.raises(CheckpointError, match=r"is a directory without model\.pt, model\.onnx or a card naming its weights; give a checkpoint"):
        load_embedder(empty)
    with pytest.raises(CheckpointError, match="is an ONNX model, not a faceverify checkpoint"):
        load_checkpoint(models["onnx"])


def test_the_library_never_imports_bench():
    """Statically (no import of bench anywhere under faceverify/) and at run time (importing the
    library's every module, the optional dlib embedder included, loads no bench module)."""
    sources = sorted((REPO_ROOT / "faceverify").rglob("*.py"))
    offenders = []
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            offenders += [f"{path.relative_to(REPO_ROOT)}: {n}" for n in names if n == "bench" or n.startswith("bench.")]
    assert not offenders
    modules = [".".join(p.relative_to(REPO_ROOT).with_suffix("").parts) for p in sources if p.name != "__main__.py"]
    code = ("import importlib, sys\n"
            f"for m in {modules!r}:\n"
            "    try:\n        importlib.import_module(m)\n"
            "    except ImportError as exc:\n        print('skipped', m, exc)\n"
            "print(sorted(m for m in sys.modules if m == 'bench' or m.startswith('bench.')))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == "[]", run.stdout
