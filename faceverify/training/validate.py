"""Quick periodic validation during training on LFW **View 1** ``pairsDevTest.txt`` (never on View 2,
the test set). Crops come from the shared ``FaceAligner`` with MTCNN, exactly as evaluation makes
them (faces not found: the ``center_crop`` fallback, so no pair is dropped); MTCNN's detections are
cached per image in the same detection cache as ``faceverify eval``, so only the first run detects.
The crops are made once and kept in memory.

The reported accuracy uses the best threshold on these same pairs (``optimistic_accuracy``): a
model-selection signal, not a test result. The LFW protocol is ``faceverify eval lfw``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..detect import CachedDetector
from ..errors import DataNotFoundError, InvalidInputError
from ..evaluation import metrics
from ..evaluation.lfw import cosine_scores, read_pairs
from ..image import load_image
from ..paths import lfw_root
from ..face_aligner import FaceAligner
from ..transforms import crops_to_tensor
from .training_set import recipe_cache_root

DETECT_BATCH = 64  # images per MTCNN pass (LFW's are all one size, so a chunk is one pyramid)


def subset_indices(same: np.ndarray, n_pairs: int) -> np.ndarray:
    """``n_pairs`` pairs (0 = all), half same-person and half different, spread over the file."""
    if n_pairs <= 0 or n_pairs >= same.size:
        return np.arange(same.size)
    picked = []
    for flag in (True, False):
        idx = np.flatnonzero(same == flag)
        take = min(idx.size, n_pairs // 2)
        picked.append(idx[np.linspace(0, idx.size - 1, take).round().astype(int)])
    return np.sort(np.concatenate(picked))


class LfwView1Validator:
    """``cache_dir``: the cache root (``data.cache_dir``; default ``$FACEVERIFY_CACHE`` or
    ``~/.cache/faceverify``); detections are kept in its ``features/detections``, where
    ``faceverify eval`` keeps its own by default."""

    def __init__(self, template: str = "112x96", n_pairs: int = 400, pairs_file: str = "pairsDevTest.txt",
                 cache_dir: str | os.PathLike | None = None, progress: bool = False):
        if "pairs.txt" == pairs_file:
            raise InvalidInputError("pairs.txt is LFW View 2, the test set: validate on View 1 (pairsDevTest.txt).")
        root = lfw_root()
        pairs = read_pairs(root / pairs_file)

        def usable(name: str) -> bool:
            return (root / "images" / name).is_file()

        # the shared LFW lacks Betsy_Coffin_0001 (used by one DevTest pair): such pairs are skipped
        ok = np.array([usable(a) and usable(b) for a, b in zip(pairs.left, pairs.right)])
        self.skipped = int((~ok).sum())
        if ok.sum() < 2:
            raise DataNotFoundError(f"LFW View 1 validation: no usable pairs in {root / pairs_file}.")
        usable_idx = np.flatnonzero(ok)
        keep = usable_idx[subset_indices(pairs.same[usable_idx], n_pairs)]
        left = [pairs.left[i] for i in keep]
        right = [pairs.right[i] for i in keep]
        self.same = pairs.same[keep]
        names = list(dict.fromkeys(left + right))
        detections = CachedDetector(Path(recipe_cache_root(cache_dir)) / "features" / "detections")
        aligner = FaceAligner(detections, template=template, fallback="center_crop")
        crops = []
        for start in tqdm(range(0, len(names), DETECT_BATCH), desc="val crops", disable=not progress, leave=False):
            images = [load_image(root / "images" / name) for name in names[start : start + DETECT_BATCH]]
            crops += [face.crop for face in aligner.align_batch(images)]
        detections.save()
        self.names = names  # image paths under lfw/images, row i of ``inputs``
        position = {n: i for i, n in enumerate(names)}
        self.left = np.array([position[n] for n in left])
        self.right = np.array([position[n] for n in right])
        self.inputs = crops_to_tensor(np.stack(crops))
        self.n_pairs = len(keep)

    @torch.no_grad()
    def __call__(self, model: torch.nn.Module, device: torch.device | str = "cpu", batch_size: int = 64) -> dict:
        was_training = model.training
        model.eval()
        try:
            feats = torch.cat([model(self.inputs[i : i + batch_size].to(device)).float().cpu()
                               for i in range(0, len(self.inputs), batch_size)]).numpy()
        finally:
            model.train(was_training)
        scores = cosine_scores(feats[self.left], feats[self.right])
        acc, thr = metrics.optimistic_accuracy(scores, self.same)
        return {"pairs": self.n_pairs, "accuracy": acc, "threshold": thr, "auc": metrics.auc(metrics.roc(scores, self.same))}
