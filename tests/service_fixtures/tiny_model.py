"""A tiny face model, trained in a few seconds on a few LFW identities, so the service tests can
check real verdicts (same person accepted, different people rejected) without a shipped model.

Training crops are aligned with the SphereFace landmark file (no MTCNN needed); the calibration
thresholds are measured through the real ``Verifier`` (MTCNN -> align -> network) on held-out
photos of the same identities, exactly like the service computes similarities."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from faceverify.align import align_face
from faceverify.backbones import build_backbone
from faceverify.checkpoint import inference_state, save_checkpoint
from faceverify.image import load_image
from faceverify.landmarks import LFW_250_TO_150, read_landmark_file
from faceverify.losses import MarginLoss, build_head
from faceverify.paths import lfw_root
from faceverify.transforms import crops_to_tensor

IDENTITIES = ["George_W_Bush", "Colin_Powell", "Tony_Blair", "Donald_Rumsfeld", "Gerhard_Schroeder", "Ariel_Sharon"]
TRAIN_PER_ID = 40  # images 1..40 of each identity train the model
CALIB = range(41, 49)  # images 41..48: calibration (threshold)
HELD_OUT = range(49, 53)  # images 49..52: the tests' photos, never seen by training or calibration
# ~2.5 MFLOPs per crop: trains in ~20-30 s on one busy CPU core
BACKBONE = {"name": "lsoftmax_lfw", "kwargs": {"embedding_dim": 64, "input_size": [112, 96], "widths": [8, 16, 32, 32, 32], "depth": 1}}
STEPS = 150
BATCH = 32


def lfw_image(name: str, number: int) -> Path:
    return lfw_root() / "images" / name / f"{name}_{number:04d}.jpg"


def _training_crops():
    landmarks = read_landmark_file(lfw_root() / "lfw_landmark.txt", scale=LFW_250_TO_150)
    crops, labels = [], []
    for label, name in enumerate(IDENTITIES):
        for n in range(1, TRAIN_PER_ID + 1):
            key = f"{name}/{name}_{n:04d}.jpg"
            crops.append(align_face(load_image(lfw_image(name, n)), landmarks[key], "112x96"))
            labels.append(label)
    return np.stack(crops), np.array(labels)


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
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    crops, labels = _training_crops()
    net = build_backbone(BACKBONE["name"], **BACKBONE["kwargs"])
    head = build_head("cosface", BACKBONE["kwargs"]["embedding_dim"], len(IDENTITIES), s=30.0, m=0.35)
    loss_fn = MarginLoss()
    opt = torch.optim.AdamW(list(net.parameters()) + list(head.parameters()), lr=1e-2, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=STEPS)
    net.train()
    for _ in range(STEPS):
        idx = rng.choice(len(crops), BATCH, replace=False)
        batch = crops[idx].copy()
        flip = rng.random(len(idx)) < 0.5
        batch[flip] = batch[flip][:, :, ::-1]
        shift = rng.integers(-3, 4, size=2)
        batch = np.roll(batch, tuple(int(s) for s in shift), axis=(1, 2))
        x = crops_to_tensor(batch)
        y = torch.from_numpy(labels[idx])
        loss = loss_fn(head(net(x), y), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    net.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out_dir / "model.pt", inference_state(BACKBONE["name"], BACKBONE["kwargs"], "112x96", net))
    tmp = out_dir / "calibration.json.tmp"
    tmp.write_text(json.dumps(calibrate(out_dir)))
    os.replace(tmp, out_dir / "calibration.json")
    return out_dir


def cached(config) -> Path:
    """The tiny model in pytest's cache (``.pytest_cache``), keyed by the code that makes and loads
    it, so it is trained once per checkout rather than once per test session."""
    from faceverify.paths import REPO_ROOT

    h = hashlib.sha256(torch.__version__.encode())
    for path in (Path(__file__), REPO_ROOT / "faceverify" / "backbones" / "lsoftmax_net.py", REPO_ROOT / "faceverify" / "checkpoint.py"):
        h.update(path.read_bytes())
    return train(config.cache.mkdir(f"faceverify-tiny-model-{h.hexdigest()[:12]}"))


def calibrate(model_dir: Path) -> dict:
    """Thresholds on the calibration photos through the real pipeline (MTCNN -> align -> net)."""
    from faceverify.embedder import load_embedder
    from faceverify.verify import Calibration, Verifier

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
