"""How closely a distilled student follows its teacher, on faces it was not trained on vs its own.

    .venv/bin/python scripts/teacher_agreement.py runs/distill_default --teacher dlib --out agreement.json

On the LFW View 1 images (never View 2) both models embed the same MTCNN detection, through
``faceverify eval``'s feature path and caches; the teacher's vectors are centred with the mean of its training targets, as in
training (``distill.centred_targets``). Reports, for LFW and for the student's training views:
the mean cosine between the student and the centred teacher (what the distillation terms raise)
and the length of the mean embedding (a direction shared by all faces); and, over every pair of
the View 1 images, TAR at FAR 1e-3 / 1e-2 of the teacher's raw cosine, of the centred teacher's
and of the student's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from faceverify.training.distill import TeacherTargets, centred_targets, student_view, view_params  # noqa: E402
from faceverify.loaders import load_embedder  # noqa: E402
from faceverify.evaluation.lfw import all_pairs_tar_at_far, read_pairs  # noqa: E402
from faceverify.evaluation.run import EvalOptions, features_for  # noqa: E402
from faceverify.models import resolve_model  # noqa: E402
from faceverify.paths import data_root  # noqa: E402
from faceverify.training.config import load_config  # noqa: E402
from faceverify.training.training_set import open_training_set  # noqa: E402


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True).clip(1e-12)


def summary(student: np.ndarray, teacher_centred: np.ndarray) -> dict:
    s = unit(student)
    return {"faces": len(s), "agreement": round(float((s * teacher_centred).sum(1).mean()), 4),
            "student_mean_norm": round(float(np.linalg.norm(s.mean(0))), 4),
            "teacher_centred_mean_norm": round(float(np.linalg.norm(teacher_centred.mean(0))), 4)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a training run directory (model.pt + config.yaml) or a published model folder")
    p.add_argument("--teacher", default="dlib")
    p.add_argument("--images", type=int, default=0, help="sample this many LFW View 1 images (default: all; as many training faces, 2000 at most)")
    p.add_argument("--out", help="write the result as JSON here")
    args = p.parse_args()

    run = Path(args.run)
    cfg = load_config(run / "config.yaml" if (run / "config.yaml").is_file() else run / "training" / "config.yaml")
    student, teacher = load_embedder(run), load_embedder(args.teacher)
    faces = open_training_set(cfg["data"], progress=False, prepare=False, wide=True)
    targets = np.asarray(TeacherTargets(faces, args.teacher, int(cfg["distill"]["views"]), cfg["distill"]["teacher_kwargs"]).load())
    _, mean = centred_targets(targets)
    centre = lambda t: unit(unit(t) - mean)  # noqa: E731  (as centred_targets does)
    # a student trained with distill.raw lives in the teacher's raw space: compare its centred part
    student_part = centre if float(cfg["distill"].get("raw") or 0) else unit

    # LFW View 1 through `faceverify eval`'s own feature path and caches: the student on its MTCNN
    # crops, the teacher as the service runs it (its card's "serve" options: dlib's chip from the
    # same MTCNN points, as `eval lfw-view1 --model dlib --dlib-detector mtcnn_points` does)
    lfw = data_root() / "lfw"
    view1 = sorted(set(read_pairs(lfw / "pairsDevTrain.txt").images()) | set(read_pairs(lfw / "pairsDevTest.txt").images()))
    view1 = [name for name in view1 if (lfw / "images" / name).is_file()]
    if args.images:
        view1 = [view1[i] for i in np.sort(np.random.default_rng(0).choice(len(view1), args.images, replace=False))]
    vectors = {}
    for who, spec in (("student", run), ("teacher", args.teacher)):
        model = resolve_model(spec)
        feats, _ = features_for(model, EvalOptions(flip="none", embedder=model.serve_options), lfw / "images", view1)
        vectors[who] = feats.vectors(view1, "none")
    stu, tea = vectors["student"], vectors["teacher"]
    result = {"lfw_view1": summary(student_part(stu), centre(tea))}
    identities = [n.split("/")[0] for n in view1]
    result["lfw_view1_all_pairs"] = {
        label: {f"tar_at_far_{k}": round(float(v.tar), 4) for k, v in all_pairs_tar_at_far(x, identities, fars=(1e-3, 1e-2))["tar_at_far"].items()}
        for label, x in (("teacher_raw", unit(tea)), ("teacher_centred", centre(tea)), ("student", unit(stu)))}

    rng = np.random.default_rng(0)
    picked = np.sort(rng.choice(len(faces), min(args.images or 2000, 2000, len(faces)), replace=False))
    template = cfg["data"]["template"]
    crops = np.stack([student_view(faces.wide(i), view_params(faces.sha1[i], 0), template) for i in picked])
    result["training_view0"] = summary(student_part(student.embed_crops(crops)), centre(targets[0, picked]))
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
