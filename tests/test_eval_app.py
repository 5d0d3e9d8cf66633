"""`faceverify eval lfw|megaface` end to end on a few real LFW images with a real (untrained)
network checkpoint, plus the feature cache and the optional dlib peer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from faceverify.paths import lfw_root

from faceverify.commands import eval as eval_app  # the app under test

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """An untrained SphereFace-20 saved in the documented checkpoint format."""
    from faceverify.backbones import build_backbone
    from faceverify.checkpoint import inference_state, save_checkpoint

    torch.manual_seed(0)
    kwargs = {"embedding_dim": 512, "input_size": [112, 96]}
    model = build_backbone("sphereface20", **kwargs)
    path = tmp_path_factory.mktemp("model") / "untrained.pt"
    save_checkpoint(path, inference_state("sphereface20", kwargs, "112x96", model))
    return path


@pytest.fixture(scope="module")
def small_pairs(tmp_path_factory):
    """10 folds of 1 same + 1 different real LFW pairs (from View 1) in the View 2 format."""
    lines = (lfw_root() / "pairsDevTest.txt").read_text().splitlines()[1:]
    same, diff = lines[:500], lines[500:]
    body = []
    for k in range(10):
        body += [same[k * 7], diff[k * 7]]
    path = tmp_path_factory.mktemp("pairs") / "pairs.txt"
    path.write_text("10\t1\n" + "\n".join(body) + "\n")
    return path


def test_eval_lfw_writes_reports_and_calibration(checkpoint, small_pairs, tmp_path, capsys):
    out = tmp_path / "out"
    rc = eval_app.main(["lfw", "--model", str(checkpoint), "--pairs", str(small_pairs), "--out", str(out),
                        "--cache", str(tmp_path / "cache"), "--flip", "concat"])
    assert rc == 0
    d = json.loads((out / "lfw.json").read_text())
    for key in ("accuracy_mean", "accuracy_std", "folds", "auc", "eer", "tar_at_far", "pairs", "no_face"):
        assert key in d, key
    assert d["pairs"] == 20 and len(d["folds"]) == 10
    assert all(a in (0.0, 0.5, 1.0) for a in d["folds"])  # 2 pairs per fold
    assert d["accuracy_mean"] == pytest.approx(np.mean(d["folds"]))
    assert set(d["tar_at_far"]) == {"0.1", "0.01", "0.001"}
    assert 0.0 <= d["auc"] <= 1.0 and 0.0 <= d["eer"] <= 1.0
    assert d["flip"] == "concat" and d["images"] == 40
    assert isinstance(d["no_face"], int) and d["no_face"] == len(d["no_face_images"])
    assert sum(d["alignment_sources"].values()) == 40
    # the thresholds are written under --out only: evaluating never changes the model's folder
    assert not (checkpoint.parent / "calibration.json").exists()
    cal = json.loads((out / "calibration.json").read_text())
    assert cal["metric"] == "cosine" and cal["flip"] == "concat"
    assert set(cal["thresholds"]) == {"far_1e-2", "far_1e-3", "far_1e-4", "best_accuracy"}
    assert all(-1.0 <= t <= 1.0 for t in cal["thresholds"].values())
    assert cal["thresholds"]["far_1e-2"] <= cal["thresholds"]["far_1e-3"] <= cal["thresholds"]["far_1e-4"]
    # --write-calibration places it beside the model, where the service reads it
    assert eval_app.main(["lfw", "--model", str(checkpoint), "--pairs", str(small_pairs), "--out", str(tmp_path / "o2"),
                          "--cache", str(tmp_path / "cache"), "--flip", "concat", "--write-calibration"]) == 0
    assert json.loads((checkpoint.parent / "calibration.json").read_text())["thresholds"] == cal["thresholds"]
    (checkpoint.parent / "calibration.json").unlink()  # the module's other tests use the bare checkpoint
    for name in ("lfw.md", "lfw_roc.png", "lfw_scores.png"):
        assert (out / name).stat().st_size > 500, name
    assert "OPTIMISTIC" in (out / "lfw.md").read_text()
    printed = capsys.readouterr().out
    assert "mean" in printed and "TAR@FAR=0.001" in printed


def test_eval_lfw_with_landmarks_and_pca(checkpoint, small_pairs, tmp_path):
    out = tmp_path / "out"
    rc = eval_app.main(["lfw", "--model", str(checkpoint), "--pairs", str(small_pairs), "--out", str(out),
                        "--landmarks", str(lfw_root() / "lfw_landmark.txt"), "--landmark-scale", "0.6",
                        "--pca", "8", "--no-cache", "--no-calibration"])
    assert rc == 0
    d = json.loads((out / "lfw.json").read_text())
    assert d["alignment"]["source"] == "landmarks" and d["alignment_sources"] == {"landmarks": 40}
    assert d["no_face"] == 0
    assert d["fold_pca_dims"] == [8] * 10


def test_eval_lfw_wrong_landmark_scale_is_a_clear_error(checkpoint, small_pairs, tmp_path, capsys):
    rc = eval_app.main(["lfw", "--model", str(checkpoint), "--pairs", str(small_pairs), "--out", str(tmp_path),
                        "--landmarks", str(lfw_root() / "lfw_landmark.txt"), "--landmark-scale", "3", "--no-cache"])
    assert rc == 2
    assert "landmark scale 3.0 is probably wrong" in capsys.readouterr().err


def test_eval_without_model_and_without_default_is_a_clear_error(small_pairs, tmp_path, monkeypatch, capsys):
    import faceverify.models

    monkeypatch.setattr(faceverify.models, "DEFAULT_MODEL_DIR", tmp_path / "models" / "default")
    rc = eval_app.main(["lfw", "--pairs", str(small_pairs), "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "default model" in capsys.readouterr().err


def test_feature_cache_serves_a_second_run_without_the_embedder(checkpoint, tmp_path):
    from faceverify.loaders import TorchEmbedder
    from faceverify.evaluation.features import compute_features

    paths = ["Aaron_Eckhart/Aaron_Eckhart_0001.jpg", "Abel_Pacheco/Abel_Pacheco_0001.jpg"]
    root = lfw_root() / "images"
    emb = TorchEmbedder(checkpoint, flip="sum", fallback="center_crop")
    cache = tmp_path / "f.npz"
    first = compute_features(emb, root, paths, cache_file=cache, config={"m": 1}, need_flipped=True)
    assert first.plain.shape == (2, 512) and first.flipped.shape == (2, 512)

    class MustNotRun:
        name = "must-not-run"

        def embed(self, images, landmarks=None):
            raise AssertionError("the cache should have served these images")

    again = compute_features(MustNotRun(), root, paths, cache_file=cache, config={"m": 1}, need_flipped=True)
    assert np.array_equal(again.plain, first.plain) and np.array_equal(again.flipped, first.flipped)
    assert list(again.sources) == list(first.sources)
    # another configuration (e.g. another model) must not reuse these features
    with pytest.raises(AssertionError, match="cache should have served"):
        compute_features(MustNotRun(), root, paths, cache_file=cache, config={"m": 2})


@pytest.fixture(scope="module")
def probe_folder(tmp_path_factory):
    """3 identities with 2 images + 12 one-image people, as symlinks to the shared LFW."""
    images = lfw_root() / "images"
    root = tmp_path_factory.mktemp("probes")
    multi = ["Aaron_Peirsol", "Abdullah_Gul", "Adrien_Brody"]
    single = ["AJ_Cook", "AJ_Lamas", "Aaron_Eckhart", "Aaron_Guiel", "Aaron_Patterson", "Aaron_Pena",
              "Aaron_Tippin", "Abba_Eban", "Abbas_Kiarostami", "Abdel_Aziz_Al-Hakim", "Abdel_Madi_Shabneh", "Abdel_Nasser_Assidi"]
    for name in multi + single:
        (root / name).mkdir()
        for src in sorted((images / name).glob("*.jpg"))[: 2 if name in multi else 1]:
            (root / name / src.name).symlink_to(src)
    return root


def test_eval_megaface_on_a_small_folder(checkpoint, probe_folder, tmp_path, capsys):
    out = tmp_path / "mf"
    rc = eval_app.main(["megaface", "--model", str(checkpoint), "--probes", str(probe_folder), "--out", str(out),
                        "--cache", str(tmp_path / "cache")])
    assert rc == 0
    d = json.loads((out / "megaface.json").read_text())
    assert d["probe_images"] == 6 and d["probe_identities"] == 3 and d["searches"] == 6
    assert d["distractor_sizes"] == [10, 12]
    assert set(d["rank1"]) == {"10", "12"} and all(0 <= v <= 1 for v in d["rank1"].values())
    assert d["rank1"]["12"] <= d["rank1"]["10"]  # nested distractor sets
    assert set(d["tar_at_far"]) == {"1e-06", "1e-05", "0.0001"}
    assert len(d["cmc"]["12"]) == 10
    for name in ("megaface.md", "megaface_cmc.png", "megaface_scores.png"):
        assert (out / name).stat().st_size > 500, name
    assert "rank-1" in capsys.readouterr().out


def test_eval_megaface_from_feature_files_with_synthetic_distractors(tmp_path):
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(6, 16)).astype(np.float32)
    feats[1] = feats[0] + 0.01  # identity a: two near-identical images
    np.save(tmp_path / "probes.npy", feats)
    (tmp_path / "probes.txt").write_text("\n".join(["a/1.jpg", "a/2.jpg", "b/1.jpg", "b/2.jpg", "c/1.jpg", "c/2.jpg"]))
    out = tmp_path / "mf"
    rc = eval_app.main(["megaface", "--probe-features", str(tmp_path / "probes.npy"), "--probe-list", str(tmp_path / "probes.txt"),
                        "--synthetic-distractors", "5000", "--out", str(out)])
    assert rc == 0
    d = json.loads((out / "megaface.json").read_text())
    assert d["synthetic_distractors"] is True and "SYNTHETIC" in d["WARNING"]
    assert d["distractor_sizes"] == [10, 100, 1000, 5000]
    assert "SYNTHETIC" in (out / "megaface.md").read_text()


def test_dlib_peer_goes_through_the_embedder_protocol():
    pytest.importorskip("dlib")
    pytest.importorskip("face_recognition_models")
    from faceverify.embedder import Embedder
    from faceverify.loaders import load_embedder
    from faceverify.image import load_image

    emb = load_embedder("dlib", flip="sum")
    assert isinstance(emb, Embedder) and emb.dim == 128
    root = lfw_root() / "images"
    imgs = [load_image(root / p) for p in ("Aaron_Peirsol/Aaron_Peirsol_0001.jpg", "Aaron_Peirsol/Aaron_Peirsol_0002.jpg",
                                           "AJ_Cook/AJ_Cook_0001.jpg")]
    batch = emb.embed(imgs)
    assert batch.plain.shape == (3, 128) and batch.flipped.shape == (3, 128)
    assert [f.source for f in batch.faces] == ["hog"] * 3
    d = np.linalg.norm(batch.plain[:, None] - batch.plain[None], axis=2)
    assert d[0, 1] < 0.6 < min(d[0, 2], d[1, 2])  # dlib's documented 0.6 Euclidean tolerance


def test_misclassified_pairs_match_the_fold_accuracies(tmp_path):
    from faceverify.evaluation import lfw
    from faceverify.evaluation.run import misclassified

    f = tmp_path / "p.txt"
    f.write_text("2\t2\n" + "\n".join(["A\t1\t2", "B\t1\t2", "A\t1\tB\t1", "C\t1\tD\t1"] * 2) + "\n")
    pairs = lfw.read_pairs(f)
    left = np.array([[1, 0], [1, 0], [1, 0], [1, 0]] * 2, float)
    right = np.array([[1, 0.1], [-1, 0.2], [0, 1], [1, 0.05]] * 2, float)  # pair 2 (same) and 4 (diff) hard
    proto = lfw.ten_fold(left, right, pairs.same, pairs.folds, center=False)
    m = misclassified(pairs, proto, {"D/D_0001.jpg"})
    assert m["count"] == round((1 - proto.mean) * len(pairs))
    assert m["count"] == m["false_rejects"] + m["false_accepts"] and m["count"] > 0
    assert m["with_no_face_image"] == sum(p["no_face"] for p in m["pairs"])


def test_eval_view1_thresholds_on_devtrain_and_skips_missing_images(checkpoint, tmp_path, capsys):
    """View 1 for choices: DevTrain gives the threshold, DevTest the accuracy; a pair naming an
    image that is not there (the shared LFW lacks Betsy_Coffin_0001) is skipped and listed."""
    def pairs_file(name: str, src: str, k: int, extra: str = "") -> str:
        lines = (lfw_root() / src).read_text().splitlines()[1:]
        n = len(lines) // 2
        body = lines[:k] + ([extra] if extra else []) + lines[n : n + k + (1 if extra else 0)]
        path = tmp_path / name
        path.write_text(f"{k + (1 if extra else 0)}\n" + "\n".join(body) + "\n")
        return str(path)

    train = pairs_file("train.txt", "pairsDevTrain.txt", 6)
    test = pairs_file("test.txt", "pairsDevTest.txt", 4, extra="Betsy_Coffin\t1\t2")
    out = tmp_path / "v1"
    rc = eval_app.main(["lfw-view1", "--model", str(checkpoint), "--dev-pairs", train, test, "--flip", "sum",
                        "--out", str(out), "--cache", str(tmp_path / "cache")])
    assert rc == 0
    d = json.loads((out / "view1.json").read_text())
    assert d["pairs_devtrain"] == 12 and d["pairs_devtest"] == 9
    assert d["skipped_pairs"] == ["test.txt: Betsy_Coffin/Betsy_Coffin_0001.jpg Betsy_Coffin/Betsy_Coffin_0002.jpg"]
    assert 0.0 <= d["accuracy_devtest"] <= 1.0 and d["accuracy_devtest"] * 9 == pytest.approx(round(d["accuracy_devtest"] * 9))
    assert (tmp_path / "cache" / "detections").is_dir()  # MTCNN results kept for the next model
    assert "LFW View 1" in capsys.readouterr().out


def test_ablation_report_table_and_curves(tmp_path, capsys):
    import yaml

    runs = []
    for name, head, acc in (("softmax", {"name": "softmax", "kwargs": {}}, 0.81), ("a4", {"name": "asoftmax", "kwargs": {"m": 4}}, 0.86)):
        run = tmp_path / name
        (run / "view1").mkdir(parents=True)
        (run / "lfw").mkdir()
        (run / "config.yaml").write_text(yaml.safe_dump({"seed": 0, "head": head}))
        (run / "metrics.csv").write_text("step,loss,accuracy,lr,lambda\n10,5.0,0.1,0.01,0\n20,4.0,0.3,0.01,0\n")
        (run / "val.csv").write_text("step,pairs,accuracy,threshold,auc\n20,999,0.7,0.3,0.8\n")
        (run / "view1" / "view1.json").write_text(json.dumps({"accuracy_devtest": acc}))
        (run / "lfw" / "lfw.json").write_text(json.dumps({"accuracy_mean": acc + 0.01, "accuracy_std": 0.01}))
        runs.append(str(run))
    assert eval_app.main(["ablation", *runs, "--out", str(tmp_path / "report")]) == 0
    table = (tmp_path / "report" / "ablation.md").read_text()
    assert "| A-Softmax (m=4) | 0 | 20 | 86.00 | — | 87.00 ± 1.00 | 20.00 |" in table
    assert "| softmax | 0 | 20 | 81.00 |" in table
    assert (tmp_path / "report" / "ablation_curves.png").stat().st_size > 10_000


def test_distillation_ablation_table_names_terms_crop_and_data(tmp_path):
    import yaml

    runs = []
    for name, distill, data in (
        ("distill_only", {"teacher": "dlib", "raw": 1.0, "cosine": 1.0, "relational": 0.5, "margin": 0.0},
         {"template": "84x72", "sources": ["pins", "celeba10k"], "select": []}),
        ("margin_only", {"teacher": "dlib", "raw": 0.0, "cosine": 0.0, "relational": 0.0, "margin": 1.0},
         {"template": "84x72", "sources": ["pins", "celeba10k", "utkface"], "select": ["pins", "celeba10k"]}),
        ("both", {"teacher": "dlib", "raw": 1.0, "cosine": 1.0, "relational": 0.5, "margin": 0.1},
         {"template": "56x48", "sources": ["pins"], "select": []}),
    ):
        run = tmp_path / name
        (run / "view1").mkdir(parents=True)
        (run / "lfw").mkdir()
        head = {"name": "cosface", "kwargs": {"s": 30, "m": 0.35}}
        (run / "config.yaml").write_text(yaml.safe_dump({"seed": 0, "head": head, "distill": distill, "data": data}))
        cos = ("", "") if name == "margin_only" else ("0.5", "0.86")  # no teacher term: the column stays empty
        (run / "metrics.csv").write_text(f"step,loss,accuracy,lr,lambda,distill_cos\n10,1.0,0,0.01,0,{cos[0]}\n3000,0.4,0,0.01,0,{cos[1]}\n")
        (run / "summary.json").write_text(json.dumps({"seconds": 1533.2, "images_per_s": 250.4}))
        (run / "view1" / "view1.json").write_text(json.dumps({"accuracy_devtest": 0.9469}))
        (run / "lfw" / "lfw.json").write_text(json.dumps({"accuracy_mean": 0.9567, "accuracy_std": 0.0111,
                                                           "tar_at_far": {"0.001": 0.6307}}))
        runs.append(str(run))
    (tmp_path / "distill_only" / "speed.json").write_text(json.dumps({"ms_per_face": 8.24}))  # bench.onnx_face_speed --write
    assert eval_app.main(["ablation", *runs, "--out", str(tmp_path / "report")]) == 0
    table = (tmp_path / "report" / "ablation.md").read_text()
    assert table.startswith("# Distillation ablation")
    assert ("| distill_only | dlib: distillation (raw + cosine + relational) | 84x72 | pins, celeba10k | 3000 | 94.69 | "
            "95.67 ± 1.11 | 63.07 | 26 | 8.2 |") in table
    assert "| margin_only | CosFace (m=0.35, s=30) | 84x72 | pins, celeba10k | 3000 |" in table  # data.select, not sources
    assert "| both | dlib: distillation (raw + cosine + relational) + CosFace (m=0.35, s=30) x0.1 | 56x48 | pins |" in table
    assert table.count("| — |\n") == 2  # no speed.json: no cost figure


def test_onnx_face_speed_times_a_checkpoint_and_a_model_folder(checkpoint):
    from bench.onnx_face_speed import measure

    exported = measure(checkpoint, runs=3)  # a checkpoint: exported to a temporary ONNX file first
    assert exported["input"] == "112x96" and exported["ms_per_face"] > 0
    shipped = measure(REPO / "models" / "default", runs=3)  # a model folder: its own model.onnx
    assert shipped["input"] == "84x72" and shipped["ms_per_face"] > 0


def test_an_onnx_model_with_a_card_evaluates_and_calibrates_like_any_model(checkpoint, tmp_path):
    """A user's own ONNX folder (model.onnx + MODEL.json): the card's ``input`` and ``evaluation``
    drive the run, and --write-calibration puts the service's thresholds beside it."""
    from faceverify.checkpoint import load_backbone
    from faceverify.export import export_onnx

    model_dir = tmp_path / "my_onnx"
    net, info = load_backbone(checkpoint)
    export_onnx(net, model_dir / "model.onnx", info.input_size)  # no faceverify metadata: the card says it all
    card = {"input": {"template": "112x96", "colour": "RGB", "mean": 127.5, "std": 128.0},
            "evaluation": {"flip": "sum", "center": False, "metric": "cosine"}}
    (model_dir / "MODEL.json").write_text(json.dumps(card))
    dev = (lfw_root() / "pairsDevTest.txt").read_text().splitlines()[1:]
    for name, lines in (("train.txt", dev[:3] + dev[500:503]), ("test.txt", dev[3:6] + dev[503:506])):
        (tmp_path / name).write_text("3\n" + "\n".join(lines) + "\n")
    out = tmp_path / "v1"
    rc = eval_app.main(["lfw-view1", "--model", str(model_dir), "--dev-pairs", str(tmp_path / "train.txt"),
                        str(tmp_path / "test.txt"), "--out", str(out), "--no-cache", "--write-calibration"])
    assert rc == 0
    d = json.loads((out / "view1.json").read_text())
    assert (d["flip"], d["center"], d["metric"]) == ("sum", False, "cosine")  # the card's, no flag given
    assert d["alignment"] == {"source": "mtcnn", "fallback": "center_crop"}
    placed = json.loads((model_dir / "calibration.json").read_text())
    assert placed == json.loads((out / "calibration.json").read_text()) and placed["model"] == "my_onnx"
    assert placed["default_operating_point"] in placed["thresholds"]


def test_a_calibration_for_the_service_needs_the_options_the_service_runs_the_model_with(tmp_path, capsys):
    """dlib's card says the service cuts its chip from MTCNN's points: calibrating it with another
    detector is refused before any work, naming the card's command."""
    calibration = json.loads((eval_app.resolve_model("dlib").calibration_file).read_text())
    rc = eval_app.main(["lfw-view1", "--model", "dlib", "--write-calibration", "--out", str(tmp_path / "o")])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("faceverify eval: the service runs model dlib with detector=mtcnn_points")
    assert "--dlib-detector mtcnn_points" in err
    assert json.loads((eval_app.resolve_model("dlib").calibration_file).read_text()) == calibration  # untouched
    assert not (tmp_path / "o").exists()


def test_options_of_another_kind_of_model_are_a_clear_error(checkpoint, tmp_path, capsys):
    rc = eval_app.main(["lfw-view1", "--model", str(checkpoint), "--dlib-detector", "mtcnn_points", "--out", str(tmp_path)])
    assert rc == 2
    assert "takes no option detector" in capsys.readouterr().err
