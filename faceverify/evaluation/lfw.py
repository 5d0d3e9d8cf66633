"""The LFW View 2 verification protocol, as coded in SphereFace's ``test/code/evaluation.m``.

- Pairs file: header ``F<TAB>N`` then F contiguous folds of N same-person pairs (``name n1 n2``)
  followed by N different-person pairs (``name1 n1 name2 n2``); pair i (1-based) is in fold
  ceil(i / 2N). A one-field header ``N`` (View 1's ``pairsDevTrain.txt``) is one fold.
- For each test fold: features are centred on the mean of the other folds' features (both images of
  every pair), optionally projected by a PCA fitted on the other folds only, L2-normalised and
  scored by cosine; the threshold is the mean of all thresholds of the sweep [-1, 1] step 1e-4 that
  reach the best accuracy on the other folds; accuracy is measured on the test fold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..embedder import FLIP_MODES, combine_flip  # noqa: F401  (re-exported for callers)
from ..errors import ConfigError, DataNotFoundError
from ..pca import Pca
from . import metrics

@dataclass
class PairList:
    left: list[str]  # image paths relative to the image root, "Name/Name_0001.jpg"
    right: list[str]
    same: np.ndarray  # bool (n,)
    n_folds: int
    fold_size: int  # pairs per fold (= 2N)
    source: str = ""

    def __len__(self) -> int:
        return len(self.left)

    @property
    def folds(self) -> np.ndarray:
        """0-based fold of each pair: pair i (0-based) is in fold i // fold_size (= ceil((i+1)/600) - 1)."""
        return np.arange(len(self)) // self.fold_size

    def images(self) -> list[str]:
        """Every distinct image of the pairs, in first-use order."""
        return list(dict.fromkeys(self.left + self.right))


def lfw_image_path(name: str, number: str) -> str:
    return f"{name}/{name}_{int(number):04d}.jpg"


def read_pairs(path: str | Path) -> PairList:
    """Parse an LFW pairs file (View 2 ``pairs.txt`` or View 1 ``pairsDev*.txt``)."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"pairs file {path} does not exist.")
    lines = [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
    if not lines:
        raise ConfigError(f"{path} is empty; expected an LFW pairs file (header 'F<TAB>N' then pairs).")
    header = lines[0]
    try:
        if len(header) == 2:
            n_folds, n_per_class = int(header[0]), int(header[1])
        elif len(header) == 1:
            n_folds, n_per_class = 1, int(header[0])
        else:
            raise ValueError
    except ValueError:
        raise ConfigError(
            f"{path}: first line {' '.join(header)!r} is not an LFW pairs header ('F<TAB>N': F folds of "
            "N same + N different pairs, or 'N' for one fold)."
        ) from None
    body = lines[1:]
    fold_size = 2 * n_per_class
    if len(body) != n_folds * fold_size:
        raise ConfigError(
            f"{path}: the header promises {n_folds} folds x {fold_size} pairs = {n_folds * fold_size} "
            f"pairs, but the file has {len(body)}."
        )
    left, right, same = [], [], []
    for lineno, f in enumerate(body, 2):
        if len(f) == 3:
            left.append(lfw_image_path(f[0], f[1]))
            right.append(lfw_image_path(f[0], f[2]))
            same.append(True)
        elif len(f) == 4:
            left.append(lfw_image_path(f[0], f[1]))
            right.append(lfw_image_path(f[2], f[3]))
            same.append(False)
        else:
            raise ConfigError(f"{path}:{lineno}: expected 'name n1 n2' or 'name1 n1 name2 n2', got {' '.join(f)!r}")
    same_arr = np.array(same, dtype=bool)
    for k in range(n_folds):
        fold = same_arr[k * fold_size:(k + 1) * fold_size]
        if fold.sum() != n_per_class:
            raise ConfigError(
                f"{path}: fold {k + 1} has {int(fold.sum())} same-person pairs; the header says {n_per_class}."
            )
    return PairList(left, right, same_arr, n_folds, fold_size, source=str(path))


def l2_normalise(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    if (norm == 0).any():
        raise ValueError(f"{int((norm == 0).sum())} feature vectors are all zeros; cannot L2-normalise")
    return x / norm


def cosine_scores(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Cosine similarity of matching rows: <l, r> / (|l| |r|)."""
    return np.einsum("ij,ij->i", l2_normalise(left), l2_normalise(right))


@dataclass
class FoldResult:
    fold: int  # 1-based
    accuracy: float
    threshold: float
    pca_dim: int | None = None


@dataclass
class TenFoldResult:
    folds: list[FoldResult]
    scores: np.ndarray  # each pair scored with its own test fold's centring / PCA
    center: bool
    pca: float | None
    metric: str = "cosine"

    @property
    def accuracies(self) -> np.ndarray:
        return np.array([f.accuracy for f in self.folds])

    @property
    def mean(self) -> float:
        return float(self.accuracies.mean())

    @property
    def std(self) -> float:
        """Population std over folds (Matlab ``std`` is ddof=1; we report ddof=0 like sklearn-based
        toolkits and insightface; ``std_ddof1`` in the report gives the other)."""
        return float(self.accuracies.std())


def ten_fold(
    left: np.ndarray,
    right: np.ndarray,
    same: np.ndarray,
    folds: np.ndarray,
    center: bool = True,
    pca: float | None = None,
    thresholds: np.ndarray | None = None,
    metric: str = "cosine",
) -> TenFoldResult:
    """SphereFace's k-fold protocol on per-pair features ``left``/``right`` ((n, D) each).

    For each test fold: mu = mean of the other folds' left and right features (evaluation.m); if
    ``pca``, a PCA fitted on the other folds' (centred) features projects everything; then
    L2-normalise, cosine, threshold from the other folds, accuracy on the test fold.

    ``metric="euclidean"`` (for peers whose features are compared by distance, like dlib's) scores
    a pair by minus the Euclidean distance of the raw (centred / projected, not normalised) features
    and sweeps thresholds in steps of 1e-4 over the training scores' range; centring does not change
    a distance, so it then matches a plain "distance + threshold from the other folds" script.
    """
    if metric not in ("cosine", "euclidean"):
        raise ConfigError(f"unknown metric {metric!r}; choose 'cosine' or 'euclidean'")
    left = np.asarray(left, dtype=np.float64)
    right = np.asarray(right, dtype=np.float64)
    same = np.asarray(same, dtype=bool)
    folds = np.asarray(folds)
    if not (left.shape == right.shape and left.shape[0] == same.size == folds.size):
        raise ValueError("left, right, same and folds must describe the same pairs")
    fold_ids = np.unique(folds)
    if fold_ids.size < 2:
        raise ConfigError("the k-fold protocol needs at least 2 folds (the threshold comes from the other folds)")
    results = []
    pair_scores = np.empty(same.size)
    for k in fold_ids:
        test = folds == k
        train = ~test
        train_feats = np.concatenate([left[train], right[train]])
        mu = train_feats.mean(0) if center else np.zeros(left.shape[1])  # evaluation.m: mu = mean([featLs(valFold); featRs(valFold)])
        l, r = left - mu, right - mu
        pca_dim = None
        if pca:
            proj = Pca.fit(train_feats - mu, pca)  # fitted on the training folds only
            l, r = proj(l), proj(r)
            pca_dim = int(proj.components.shape[0])
        if metric == "cosine":
            scores = cosine_scores(l, r)
            sweep = metrics.SPHEREFACE_THRESHOLDS if thresholds is None else thresholds
        else:
            scores = -np.linalg.norm(l - r, axis=1)  # higher = more similar
            lo, hi = np.floor(scores[train].min() * 1e4), np.ceil(scores[train].max() * 1e4)
            sweep = np.arange(lo - 1, hi + 2) / 1e4 if thresholds is None else thresholds
        thr = metrics.best_threshold(scores[train], same[train], sweep)
        acc = metrics.accuracy(scores[test], same[test], thr)
        pair_scores[test] = scores[test]
        results.append(FoldResult(fold=int(k) + 1, accuracy=acc, threshold=thr, pca_dim=pca_dim))
    return TenFoldResult(folds=results, scores=pair_scores, center=center, pca=pca, metric=metric)


def all_pairs_tar_at_far(vectors: np.ndarray, identities, fars=(1e-3, 1e-4), chunk: int = 1024) -> dict:
    """Cosine TAR/threshold at each FAR over *every* pair of distinct images (genuine: same
    identity; impostor: different), not just the 3,000 impostor pairs of ``pairs.txt``, which cannot
    resolve FAR 1e-4. 7,701 LFW images give ~29.6M impostor pairs; only the top
    ``max(fars) * n + 1`` impostor scores are kept (``metrics.threshold_at_far``)."""
    x = l2_normalise(np.asarray(vectors, dtype=np.float32))
    ids = np.unique(np.asarray(identities), return_inverse=True)[1]
    n = ids.size
    counts = np.bincount(ids)
    n_genuine = int((counts * (counts - 1) // 2).sum())
    n_impostor = n * (n - 1) // 2 - n_genuine
    keep = int(np.floor(max(fars) * n_impostor)) + 1
    genuine, top = [], np.empty(0, np.float32)
    for start in range(0, n, chunk):
        rows = np.arange(start, min(start + chunk, n))
        scores = x[rows] @ x.T
        upper = np.arange(n)[None, :] > rows[:, None]  # each unordered pair once
        same = ids[rows][:, None] == ids[None, :]
        genuine.append(scores[upper & same])
        impostor = np.concatenate([top, scores[upper & ~same]])
        top = impostor if impostor.size <= keep else np.partition(impostor, impostor.size - keep)[-keep:]
    at = metrics.tar_at_far(np.concatenate(genuine), top, n_impostor, fars)
    return {"genuine_pairs": n_genuine, "impostor_pairs": n_impostor, "tar_at_far": at}


@dataclass
class LfwReport:
    """Everything ``faceverify eval lfw`` reports; ``to_dict`` is the JSON."""

    protocol: TenFoldResult
    plain_scores: np.ndarray  # cosine of L2-normalised (flip-combined) features, no centring/PCA
    same: np.ndarray
    flip: str
    no_face: int
    images: int
    alignment: dict = field(default_factory=dict)
    fars: tuple[float, ...] = (1e-1, 1e-2, 1e-3)

    def __post_init__(self):
        self.roc = metrics.roc(self.plain_scores, self.same)
        self.auc = metrics.auc(self.roc)
        self.eer, self.eer_threshold = metrics.eer(self.roc)
        self.tar = metrics.tar_at_far_pairs(self.plain_scores, self.same, self.fars)
        self.optimistic, self.optimistic_threshold = metrics.optimistic_accuracy(self.plain_scores, self.same)

    def to_dict(self) -> dict:
        acc = self.protocol.accuracies
        return {
            "protocol": "LFW 10-fold, SphereFace evaluation.m (threshold from the other folds, mean of best thresholds)",
            "pairs": int(self.same.size),
            "pairs_same": int(self.same.sum()),
            "images": self.images,
            "no_face": self.no_face,
            "alignment": self.alignment,
            "flip": self.flip,
            "center": self.protocol.center,
            "metric": self.protocol.metric,
            "pca": self.protocol.pca,
            "accuracy_mean": self.protocol.mean,
            "accuracy_std": self.protocol.std,
            "accuracy_std_ddof1": float(acc.std(ddof=1)) if acc.size > 1 else 0.0,
            "folds": acc.tolist(),
            "fold_thresholds": [f.threshold for f in self.protocol.folds],
            "fold_pca_dims": [f.pca_dim for f in self.protocol.folds] if self.protocol.pca else None,
            "all_pairs_score": "cosine of L2-normalised features, no centring, no PCA (the score the service uses)",
            "auc": self.auc,
            "eer": self.eer,
            "eer_threshold": self.eer_threshold,
            "tar_at_far": {k: v.tar for k, v in self.tar.items()},
            "tar_at_far_detail": {k: v.to_dict() for k, v in self.tar.items()},
            "accuracy_best_threshold_all_pairs_OPTIMISTIC": self.optimistic,
            "optimistic_threshold": self.optimistic_threshold,
            "roc": self.roc.to_dict(),
        }
