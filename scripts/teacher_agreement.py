"""How closely a distilled student follows its teacher, on faces it was not trained on vs its own.

    .venv/bin/python scripts/teacher_agreement.py runs/distill_default --teacher dlib --images 1000

For a sample of LFW View 1 images (never View 2) both models embed the same detection (the
student's MTCNN points); the teacher's vectors are centred with the mean of its training targets,
as in training (``distill.centred_targets``). Prints, for LFW and for the student's training views:
the mean cosine between the student and the centred teacher (what the distillation term raises),
and the length of the mean embedding (a direction shared by all faces).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from faceverify.distill import TeacherTargets, centred_targets, student_view, view_params  # noqa: E402
from faceverify.embedder import load_embedder  # noqa: E402
from faceverify.evaluation.lfw import read_pairs  # noqa: E402
from faceverify.image import load_image  # noqa: E402
from faceverify.paths import data_root  # noqa: E402
from faceverify.training.config import load_config  # noqa: E402
from faceverify.training.datasets import open_training_set  # noqa: E402


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
    p.add_argument("--images", type=int, default=1000, help="LFW View 1 images sampled (and as many training faces)")
    p.add_argument("--out", help="write the result as JSON here")
    args = p.parse_args()

    run = Path(args.run)
    cfg = load_config(run / "config.yaml" if (run / "config.yaml").is_file() else run / "training" / "config.yaml")
    student, teacher = load_embedder(run), load_embedder(args.teacher)
    faces = open_training_set(cfg["data"], progress=False, prepare=False, wide=True)
    targets = np.asarray(TeacherTargets(faces, args.teacher, int(cfg["distill"]["views"]), cfg["distill"]["teacher_kwargs"]).load())
    _, mean = centred_targets(targets)
    centre = lambda t: unit(unit(t) - mean)  # noqa: E731  (as centred_targets does)

    rng = np.random.default_rng(0)
    lfw = data_root() / "lfw"
    view1 = sorted(set(read_pairs(lfw / "pairsDevTrain.txt").images()) | set(read_pairs(lfw / "pairsDevTest.txt").images()))
    chosen = [view1[i] for i in np.sort(rng.choice(len(view1), min(args.images, len(view1)), replace=False))]
    stu, tea = [], []
    for start in range(0, len(chosen), 64):
        images = [load_image(lfw / "images" / name) for name in chosen[start:start + 64]]
        batch = student.embed(images)
        detected = [(img, f.landmarks) for img, f in zip(images, batch.faces) if f.source == "mtcnn"]
        stu.append(batch.plain[[f.source == "mtcnn" for f in batch.faces]])
        tea.append(teacher.embed([d[0] for d in detected], [d[1] for d in detected]).plain)
    result = {"lfw_view1": summary(np.concatenate(stu), centre(np.concatenate(tea)))}

    picked = np.sort(rng.choice(len(faces), min(args.images, len(faces)), replace=False))
    template = cfg["data"]["template"]
    crops = np.stack([student_view(faces.wide(i), view_params(faces.sha1[i], 0), template) for i in picked])
    result["training_view0"] = summary(student.embed_crops(crops), centre(targets[0, picked]))
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
