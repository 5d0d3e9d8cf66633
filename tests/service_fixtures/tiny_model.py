"""A tiny face model, trained in a few seconds on a few LFW identities, so the service tests can
check real verdicts (same person accepted, different people rejected) without a shipped model.

It is trained like any model: the recipe ``tiny_model.yaml`` through the library's loop
(``faceverify.training.loop.train``) on a packed set of crops aligned with the SphereFace landmark
file (no MTCNN needed); the calibration thresholds are measured through the real ``Verifier``
(MTCNN -> align -> network) on held-out photos of the same identities, exactly like the service
computes similarities."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from faceverify.align import align_face
from faceverify.image import load_image
from faceverify.landmarks import LFW_250_TO_150, read_landmark_file
from faceverify.packed import FORMAT, write_json_atomic, write_shard
from faceverify.paths import lfw_root
from faceverify.training import loop
from faceverify.training.config import load_config

IDENTITIES = ["George_W_Bush", "Colin_Powell", "Tony_Blair", "Donald_Rumsfeld", "Gerhard_Schroeder", "Ariel_Sharon"]
TRAIN_PER_ID = 40  # images 1..40 of each identity train the model
CALIB = range(41, 49)  # images 41..48: calibration (threshold)
HELD_OUT = range(49, 53)  # images 49..52: the tests' photos, never seen by training or calibration
RECIPE = Path(__file__).with_name("tiny_model.yaml")


def lfw_image(name: str, number: int) -> Path:
    return lfw_root() / "images" / name / f"{name}_{number:04d}.jpg"


def pack_training_crops(dst: Path, template: str, pad: int) -> Path:
    """Images 1..TRAIN_PER_ID of every identity, aligned from the landmark file, as a packed set."""
    landmarks = read_landmark_file(lfw_root() / "lfw_landmark.txt", scale=LFW_250_TO_150)
    crops, identities, paths = [], [], []
    for name in IDENTITIES:
        for n in range(1, TRAIN_PER_ID + 1):
            key = f"{name}/{name}_{n:04d}.jpg"
            crops.append(align_face(load_image(lfw_image(name, n)), landmarks[key], template, pad))
            identities.append(name)
            paths.append(key)
    write_shard(dst, 0, np.stack(crops), {"identities": identities, "paths": paths})
    height, width = crops[0].shape[:2]
    write_json_atomic(dst / "manifest.json", {"format": FORMAT, "template": template, "pad": pad, "crop_size": [height, width],
                                              "classes": list(IDENTITIES), "shards": [0], "wide": False})
    return dst


def train(out_dir: Path, seed: int = 0) -> Path:
    """Train, save ``out_dir/model.pt`` and ``out_dir/calibration.json``; returns ``out_dir``."""
    out_dir = Path(out_dir)
    if (out_dir / "model.pt").is_file() and (out_dir / "calibration.json").is_file():
        return out_dir
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # ~20 s on a busy 2-core box; 2 OpenMP threads there take minutes
    try:
        return _train(out_dir, seed)
    finally:
        torch.set_num_threads(previous)


def _train(out_dir: Path, seed: int) -> Path:
    with tempfile.TemporaryDirectory(prefix="faceverify-tiny-model-") as tmp:
        recipe = load_config(RECIPE, [f"data.packed={Path(tmp) / 'faces'}", f"seed={seed}"])
        pack_training_crops(Path(tmp) / "faces", recipe["data"]["template"], int(recipe["data"]["pad"]))
        loop.train(recipe, Path(tmp) / "run")
        out_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(tmp) / "run" / "model.pt", out_dir / "model.pt")
    tmp = out_dir / "calibration.json.tmp"
    tmp.write_text(json.dumps(calibrate(out_dir)))
    os.replace(tmp, out_dir / "calibration.json")
    return out_dir


def cached(config) -> Path:
    """The tiny model in pytest's cache (``.pytest_cache``), keyed by the code that makes and loads
    it, so it is trained once per checkout rather than once per test session."""
    from faceverify.paths import REPO_ROOT

    h = hashlib.sha256(torch.__version__.encode())
    for path in (Path(__file__), RECIPE, REPO_ROOT / "faceverify" / "backbones" / "lsoftmax_net.py", REPO_ROOT / "faceverify" / "checkpoint.py",
                 *(REPO_ROOT / "faceverify" / "training" / name for name in ("loop.py", "data.py", "schedules.py")),
                 REPO_ROOT / "faceverify" / "losses.py"):
        h.update(path.read_bytes())
    return train(config.cache.mkdir(f"faceverify-tiny-model-{h.hexdigest()[:12]}"))


def calibrate(model_dir: Path) -> dict:
    """Thresholds on the calibration photos through the real pipeline (MTCNN -> align -> net)."""
    from faceverify.loaders import load_embedder
    from faceverify.calibration import Calibration
    from faceverify.verify import Verifier

    verifier = Verifier(load_embedder(Path(model_dir) / "model.pt"), Calibration())
    names, images = [], []
    for name in IDENTITIES:
        for n in CALIB:
            names.append(name)
            images.append(load_image(lfw_image(name, n)))
    results = verifier.embed_faces(images, "largest_central")
    keep = [i for i, r in enumerate(results) if not isinstance(r, Exception)]
    vecs = np.stack([results[i].vector for i in keep])
    who = np.array([names[i] for i in keep])
    sims = vecs @ vecs.T
    iu = np.triu_indices(len(keep), 1)
    same = (who[:, None] == who[None, :])[iu]
    scores = sims[iu]
    impostor = np.sort(scores[~same])
    genuine = scores[same]
    # accept when cosine > threshold; with ~800 impostor pairs FAR 1e-3 is the largest impostor
    # score (the empirical quantile cannot resolve lower), FAR 1e-4 the same.
    far3 = float(impostor[-1])
    candidates = np.unique(scores)
    acc = [((genuine > t).sum() + (impostor <= t).sum()) / scores.size for t in candidates]
    best = float(candidates[int(np.argmax(acc))])
    return {
        "metric": "cosine",
        "thresholds": {"far_1e-3": far3, "far_1e-4": far3, "best_accuracy": best},
        "flip": "none",
        "source": f"tests/service_fixtures/tiny_model.py: {len(keep)} calibration photos of {len(IDENTITIES)} LFW identities",
        "impostor_pairs": int((~same).sum()),
        "genuine_pairs": int(same.sum()),
        "genuine_above_far3": float((genuine > far3).mean()),
    }


if __name__ == "__main__":
    import sys
    import time

    t = time.time()
    out = train(Path(sys.argv[1]))
    print(f"trained in {time.time() - t:.1f}s:", (out / "calibration.json").read_text())
