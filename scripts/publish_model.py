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
import hashlib
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
from faceverify.training.config import recipe_hash  # noqa: E402

RECORD = ("metrics.csv", "val.csv", "training_curve.png", "summary.json", "config.yaml")


# What a recipe's teacher spec is, for the model card.
TEACHERS = {
    "dlib": {"name": "dlib_face_recognition_resnet_model_v1", "licence": "public domain (released by its author, Davis King)",
             "embedding_dim": 128, "trained_on": "about 3M faces of 7,485 identities (face_recognition_models / dlib-models)"},
}


def relative(path: Path) -> str:
    """A path as the README writes it: relative to the repository when inside it."""
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


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
    run([py, "-m", "eval", "lfw-view1", "--model", rel, "--out", report, "--write-calibration"])
    run([py, "-m", "eval", "lfw", "--model", rel, "--out", report])
    report = dst / "report"
    lfw = json.loads((report / "lfw.json").read_text())
    view1 = json.loads((report / "view1.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    recipe = REPO / args.recipe
    config = state["config"]
    teacher = None
    if (config.get("distill") or {}).get("teacher"):
        k = config["distill"]
        teacher = TEACHERS.get(str(k["teacher"]), {"name": str(k["teacher"])}) | {
            "views": k["views"], "loss": {"cosine": k["cosine"], "relational": k["relational"], "raw": k.get("raw", 0.0),
                                           "margin": k["margin"]}}
    manifest = {
        "model": "model.pt",
        "model_sha256": sha256(dst / "model.pt"),
        "model_bytes": (dst / "model.pt").stat().st_size,
        "backbone": state["backbone"],
        "template": state["input"]["template"],
        "recipe": args.recipe,
        "recipe_file_sha256": sha256(recipe) if recipe.is_file() else None,
        "recipe_sha256": recipe_hash(config),
        "teacher": teacher,
        "training": {k: summary.get(k) for k in ("steps", "seconds", "images_per_s")} | {
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
