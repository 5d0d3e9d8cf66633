"""Publish a finished training run as a shipped model folder (``models/default`` by default).

    .venv/bin/python scripts/publish_model.py runs/default [--to models/default]

Copies the inference bundle (``model.pt``: weights, backbone, template, merged recipe and its
hash) and the training record (metrics.csv, training_curve.png, summary.json), then evaluates the
published copy exactly as a user would (``faceverify eval lfw-view1`` and ``faceverify eval lfw``
with the model's evaluation settings; the service's ``calibration.json`` beside the weights comes from
View 1's images, never from the test view), and writes ``MODEL.json``: what was trained, how, on what (and from which
teacher), and what it scores. Paths in the record are relative to the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from faceverify.checkpoint import load_checkpoint  # noqa: E402
from faceverify.embedder import FLIP_MODES  # noqa: E402
from faceverify.models import file_digest, resolve_model  # noqa: E402
from faceverify.training.config import recipe_hash  # noqa: E402

RECORD = ("metrics.csv", "val.csv", "training_curve.png", "summary.json", "config.yaml")


# dlib has no model card of its own (it is a library, not a model folder); named models carry theirs.
DLIB = {"name": "dlib_face_recognition_resnet_model_v1", "licence": "public domain (released by its author, Davis King)",
        "embedding_dim": 128, "trained_on": "about 3M faces of 7,485 identities (face_recognition_models / dlib-models)"}
TEACHER_DATA = ("The teachers were trained on web-crawled photos of public figures that may include people in LFW, "
                "as is usual for published LFW figures; no LFW image was used for this model's training, "
                "its teachers' targets, its calibration or its hyper-parameters.")


def teacher_card(spec: str) -> dict:
    """What the model card says of one teacher: its own card's name, licence, source and weights."""
    if spec == "dlib":
        return {"spec": spec, **DLIB}
    card = resolve_model(spec).manifest()
    out = {"spec": spec, "name": spec, "embedding_dim": card.get("embedding_dim")}
    for key in ("description", "licence", "source", "trained_on", "published"):
        if card.get(key) is not None:
            out[key] = card[key]
    if card.get("weights"):
        out["weights"] = {k: card["weights"][k] for k in ("package", "file", "sha256") if k in card["weights"]}
    return out


def teachers_section(distill: dict) -> dict | None:
    """The recipe's teachers (primary first) with their cards, and how the student learned them."""
    specs = distill.get("teacher")
    if not specs:
        return None
    specs = [specs] if isinstance(specs, str) else list(specs)
    return {"teachers": [teacher_card(str(s)) for s in specs], "views": distill["views"],
            "loss": {k: distill.get(k, 0.0) for k in ("raw", "cosine", "relational", "margin")}
            | {k: distill[k] for k in ("projection", "teacher_weights") if distill.get(k) is not None}}


def card_backbone(backbone: dict, config: dict) -> dict:
    """The backbone as the card states it: a graph rebuilt from an ONNX file (``onnx_graph``) is named
    by its source and node count; its full description stays in model.pt."""
    kwargs = dict(backbone.get("kwargs") or {})
    graph = kwargs.pop("graph", None)
    if graph is not None:
        kwargs["graph"] = (f"{len(graph.get('nodes', []))} ONNX nodes of {config['model'].get('init_from') or 'an ONNX file'}"
                           f" (input {graph.get('size')} resampled to {kwargs.get('input_size')}; the full graph is in model.pt)")
    return {**backbone, "kwargs": kwargs}


def weights_terms(teachers: list[dict]) -> str:
    """The terms the distilled weights inherit: the most restrictive teacher licence and training data."""
    restricted = [t["name"] for t in teachers if "non-commercial" in t.get("licence", "")]
    if restricted:
        return (f"research / non-commercial use only: distilled from {', '.join(restricted)}, whose weights are licensed "
                "for non-commercial research, and trained on faces whose sources allow research use only")
    return "research / non-commercial use only: trained on faces whose sources allow research use only"


def relative(path: Path) -> str:
    """A path as the README writes it: relative to the repository when inside it."""
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def run(argv: list[str]) -> None:
    print("+", " ".join(argv), flush=True)
    subprocess.run(argv, check=True, cwd=REPO)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a finished `faceverify train` run directory (with model.pt)")
    p.add_argument("--to", default=str(REPO / "models" / "default"))
    p.add_argument("--recipe", default="train/configs/distill/default.yaml", help="the committed recipe the run used")
    p.add_argument("--flip", default="sum", choices=FLIP_MODES, help="the model's evaluation flip mode")
    p.add_argument("--no-center", action="store_true", help="the model's evaluation does not centre features (chosen on View 1)")
    args = p.parse_args()
    run_dir, dst = Path(args.run), Path(args.to)
    if not (run_dir / "model.pt").is_file():
        sys.exit(f"{run_dir}/model.pt does not exist: the run has not finished (resume it with --resume).")
    state = load_checkpoint(run_dir / "model.pt")
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy2(run_dir / "model.pt", dst / "model.pt")
    (dst / "model.onnx").unlink(missing_ok=True)  # the previous model's export must not outlive it
    (dst / "training").mkdir(exist_ok=True)
    for name in RECORD:
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, dst / "training" / name)

    py = sys.executable
    rel = relative(dst)
    report = f"{rel}/report"
    evaluation = {"flip": args.flip, "pca": None, "metric": "cosine"} | ({"center": False} if args.no_center else {})
    # the settings are recorded first, so the evaluations below (and a user's plain `faceverify eval
    # lfw`) take them as defaults
    manifest_path = dst / "MODEL.json"
    previous = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    manifest_path.write_text(json.dumps({**previous, "evaluation": evaluation}, indent=2) + "\n")
    # the base install serves the ONNX export (faceverify/runtime.py); --check compares it with torch
    run([py, "-m", "faceverify", "export", f"{rel}/model.pt", f"{rel}/model.onnx", "--check"])
    run([py, "-m", "eval", "lfw-view1", "--model", rel, "--out", report, "--write-calibration"])
    run([py, "-m", "eval", "lfw", "--model", rel, "--out", report])
    report = dst / "report"
    lfw = json.loads((report / "lfw.json").read_text())
    view1 = json.loads((report / "view1.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    recipe = REPO / args.recipe
    config = state["config"]
    distillation = teachers_section(config.get("distill") or {})
    manifest = {
        "model": "model.pt",
        "model_sha256": file_digest(dst / "model.pt"),
        "model_bytes": (dst / "model.pt").stat().st_size,
        "onnx": "model.onnx",
        "onnx_bytes": (dst / "model.onnx").stat().st_size,
        "backbone": card_backbone(state["backbone"], config),
        "template": state["input"]["template"],
        "recipe": args.recipe,
        "recipe_file_sha256": file_digest(recipe) if recipe.is_file() else None,
        "recipe_sha256": recipe_hash(config),
        "distillation": distillation,
        "weights_terms": weights_terms(distillation["teachers"] if distillation else []),
        "teacher_data": TEACHER_DATA if distillation else None,
        # seconds: this process's; a resumed run's earlier part is in its metrics.csv, not here
        "training": {k: summary.get(k) for k in ("steps", "seconds", "images_per_s", "resumed_from")} | {
            "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, {os.cpu_count()} cores",
            "data": config["data"]["sources"], "data_origins": config["data"].get("origins") or {}},
        "evaluation": evaluation,
        "lfw_view2": {"accuracy_mean": lfw["accuracy_mean"], "accuracy_std": lfw["accuracy_std"], "auc": lfw["auc"],
                      "tar_at_far": lfw["tar_at_far"], "flip": lfw["flip"], "metric": lfw["metric"],
                      "command": lfw["command"], "pairs": lfw["pairs"]},
        "lfw_view1_devtest": view1["accuracy_devtest"],
        "calibration": "calibration.json",
        # chosen on View 1 (eval lfw-view1): the service's threshold when a request names none
        "default_operating_point": view1["calibration"].get("default_operating_point"),
        "lfw_view1_devtest_at_operating_points": view1["devtest_accuracy_at"] | {"best_threshold": view1["devtest_best_accuracy"]},
        "reproduce": [f"faceverify train --config {args.recipe} --out runs/default",
                      f"python scripts/publish_model.py runs/default --to {rel} --recipe {args.recipe}"
                      + ("" if args.flip == "sum" else f" --flip {args.flip}") + (" --no-center" if args.no_center else "")],
    }
    (dst / "MODEL.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"published {dst}: LFW View 2 {100 * lfw['accuracy_mean']:.2f}% ± {100 * lfw['accuracy_std']:.2f}, "
          f"View 1 {100 * view1['accuracy_devtest']:.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
