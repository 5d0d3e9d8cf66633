"""Export: TorchScript and ONNX (dynamic batch) reproduce the torch embedding."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from faceverify.backbones import build_backbone
from faceverify.checkpoint import inference_state, save_checkpoint
from faceverify.errors import EXIT_USAGE
from faceverify.commands.export import main
from faceverify.export import check_onnx, export_onnx, export_torchscript

KWARGS = {"embedding_dim": 32, "input_size": [112, 96], "widths": [8, 16, 16, 32]}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = build_backbone("sphereface20", **KWARGS).eval()
    root = tmp_path_factory.mktemp("model")
    save_checkpoint(root / "model.pt", inference_state("sphereface20", KWARGS, "112x96", model))
    return root, model


def test_onnx_dynamic_batch_matches_torch(model_dir, tmp_path):
    root, model = model_dir
    assert main([str(root), str(tmp_path / "m.onnx"), "--check"]) == 0
    proto = onnx.load(str(tmp_path / "m.onnx"))
    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value  # symbolic, not fixed
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["faceverify.template"] == "112x96" and meta["faceverify.embedding_dim"] == "32"
    assert [i.name for i in session.get_inputs()] == ["input"] and session.get_outputs()[0].shape[1] == 32
    for n in (1, 4, 7):
        x = torch.randn(n, 3, 112, 96)
        with torch.no_grad():
            ref = model(x).numpy()
        got = session.run(None, {"input": x.numpy()})[0]
        assert got.shape == (n, 32)
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-4)


def test_onnx_112x112_mobilefacenet(tmp_path):
    model = build_backbone("mobilefacenet", embedding_dim=16, input_size=(112, 112), width=16, last=64).eval()
    export_onnx(model, tmp_path / "mbf.onnx", (112, 112))
    assert check_onnx(model, tmp_path / "mbf.onnx", (112, 112), batches=(1, 5)) < 1e-4


def test_torchscript_matches_torch(model_dir, tmp_path):
    root, model = model_dir
    assert main([str(root), str(tmp_path / "m.ts")]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.load(str(tmp_path / "m.ts"))
    for n in (1, 3):
        x = torch.randn(n, 3, 112, 96)
        with torch.no_grad():
            assert torch.allclose(scripted(x), model(x), atol=1e-5)
    export_torchscript(model, tmp_path / "direct.ts", (112, 96))
    assert (tmp_path / "direct.ts").stat().st_size > 0


def test_export_refuses_unknown_format_and_missing_model(model_dir, tmp_path, capsys):
    root, _ = model_dir
    assert main([str(root), str(tmp_path / "m.xyz")]) == EXIT_USAGE == 2  # as every command (faceverify.errors)
    assert main([str(tmp_path / "nope.pt"), str(tmp_path / "m.onnx")]) == EXIT_USAGE
    assert "does not exist" in capsys.readouterr().err
