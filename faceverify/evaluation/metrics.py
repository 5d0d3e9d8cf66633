"""Verification and identification metrics on score arrays (higher score = more similar).

Conventions shared by every function here:
- ``labels``: boolean, True for a genuine (same-person) pair, False for an impostor pair.
- A pair is *accepted* at threshold ``t`` when ``score > t`` (strict, as SphereFace's
  ``getAccuracy``); FAR(t) = #impostors accepted / #impostors, TAR(t) = #genuine accepted / #genuine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# SphereFace test/code/evaluation.m: thresholds = (-thrNum:thrNum)/thrNum with thrNum = 10000
SPHEREFACE_THRESHOLDS = np.arange(-10000, 10001, dtype=np.float64) / 10000.0


def _split(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).astype(bool).ravel()
    if scores.shape != labels.shape:
        raise ValueError(f"scores ({scores.shape[0]}) and labels ({labels.shape[0]}) differ in length")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinity (a zero feature vector?)")
    return scores[labels], scores[~labels]


def accuracy_counts(scores: np.ndarray, labels: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Number of correct decisions for each threshold: #(genuine > t) + #(impostor < t).

    Counts, not fractions, so that "reaches the best accuracy" is an exact integer comparison.
    Computed with sorted arrays in O((n + T) log n) rather than an n x T comparison matrix.
    """
    genuine, impostor = _split(scores, labels)
    genuine.sort()
    impostor.sort()
    thresholds = np.asarray(thresholds, dtype=np.float64)
    genuine_above = genuine.size - np.searchsorted(genuine, thresholds, side="right")  # #(g > t)
    impostor_below = np.searchsorted(impostor, thresholds, side="left")  # #(i < t)
    return genuine_above + impostor_below


def best_threshold(scores: np.ndarray, labels: np.ndarray, thresholds: np.ndarray = SPHEREFACE_THRESHOLDS) -> float:
    """SphereFace ``getThreshold``: the mean of all thresholds of the sweep that reach the best
    accuracy (evaluation.m: ``threshold = mean(thresholds(accuracys == max(accuracys)))``)."""
    counts = accuracy_counts(scores, labels, thresholds)
    return float(np.mean(np.asarray(thresholds, dtype=np.float64)[counts == counts.max()]))


def accuracy(scores: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    """SphereFace ``getAccuracy``: (#(genuine > t) + #(impostor < t)) / n."""
    n = np.asarray(scores).size
    return float(accuracy_counts(scores, labels, np.array([threshold]))[0] / n)


def optimistic_accuracy(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Best accuracy over every threshold chosen on the very pairs it is measured on (the "ACC" some
    toolkits print, e.g. opensphere's ``get_metrics``). Optimistic by construction: never compare it
    with a 10-fold figure. Returns (accuracy, threshold); candidate thresholds are the midpoints
    between consecutive distinct scores plus one below/above all scores, so the optimum is exact."""
    s = np.unique(np.asarray(scores, dtype=np.float64))
    candidates = np.concatenate([[s[0] - 1.0], (s[:-1] + s[1:]) / 2.0, [s[-1] + 1.0]])
    counts = accuracy_counts(scores, labels, candidates)
    best = int(np.argmax(counts))
    return float(counts[best] / np.asarray(scores).size), float(candidates[best])


@dataclass
class Roc:
    far: np.ndarray  # increasing, from 0 to 1
    tar: np.ndarray
    thresholds: np.ndarray  # decreasing; accept when score > threshold

    def to_dict(self, max_points: int = 400) -> dict:
        """A down-sampled copy for JSON reports (every point kept when there are few)."""
        idx = np.unique(np.linspace(0, self.far.size - 1, min(max_points, self.far.size)).round().astype(int))
        return {"far": self.far[idx].tolist(), "tar": self.tar[idx].tolist(), "thresholds": self.thresholds[idx].tolist()}


def roc(scores: np.ndarray, labels: np.ndarray) -> Roc:
    """The full empirical ROC: one point per distinct score (accept when score > t, with t just
    below each distinct score), plus the (0, 0) point."""
    genuine, impostor = _split(scores, labels)
    if genuine.size == 0 or impostor.size == 0:
        raise ValueError("a ROC needs both genuine and impostor pairs")
    distinct = np.unique(np.concatenate([genuine, impostor]))[::-1]  # decreasing
    # threshold just below each distinct score: accept the score itself
    thresholds = np.concatenate([[np.inf], np.nextafter(distinct, -np.inf)])
    genuine.sort()
    impostor.sort()
    tar = (genuine.size - np.searchsorted(genuine, thresholds, side="right")) / genuine.size
    far = (impostor.size - np.searchsorted(impostor, thresholds, side="right")) / impostor.size
    return Roc(far=far, tar=tar, thresholds=thresholds)


def auc(curve: Roc) -> float:
    """Area under the ROC (trapezoidal rule over the empirical curve)."""
    return float(np.trapezoid(curve.tar, curve.far))


def eer(curve: Roc) -> tuple[float, float]:
    """Equal error rate: FAR = FRR = 1 - TAR, linearly interpolated between the two ROC points where
    FAR - FRR changes sign. Returns (eer, threshold)."""
    frr = 1.0 - curve.tar
    diff = curve.far - frr  # increasing from -1 (t = +inf) to +1
    j = int(np.argmax(diff >= 0))
    if j == 0:
        return float(curve.far[0]), float(curve.thresholds[0])
    i = j - 1
    # linear interpolation of FAR(t) - FRR(t) = 0 between points i and j
    w = -diff[i] / (diff[j] - diff[i]) if diff[j] != diff[i] else 0.0
    rate = curve.far[i] + w * (curve.far[j] - curve.far[i])
    thr_i = curve.thresholds[i] if np.isfinite(curve.thresholds[i]) else curve.thresholds[j]
    return float(rate), float(thr_i + w * (curve.thresholds[j] - thr_i))


@dataclass
class TarAtFar:
    far: float  # the requested FAR
    tar: float
    threshold: float  # accept when score > threshold
    achieved_far: float  # the empirical FAR at that threshold (<= far)
    resolvable: bool  # False when far * #impostors < 1: no impostor may be accepted, FAR is 0

    def to_dict(self) -> dict:
        return {"far": self.far, "tar": self.tar, "threshold": self.threshold,
                "achieved_far": self.achieved_far, "resolvable": self.resolvable}


def threshold_at_far(impostor_top: np.ndarray, n_impostors: int, far: float) -> tuple[float, int]:
    """The smallest threshold whose empirical FAR is <= ``far``.

    ``impostor_top`` must hold (at least) the ``floor(far * n_impostors) + 1`` highest impostor
    scores, in any order — so a caller that cannot hold all impostor scores (MegaFace: probes x 1M
    distractors) passes only the global top ones. With k = floor(far * n) impostors allowed above the
    threshold, the threshold is the (k+1)-th highest impostor score (accept when score > it).
    Returns (threshold, number of impostors above it).
    """
    if not 0.0 < far <= 1.0:
        raise ValueError(f"FAR must be in (0, 1], got {far}")
    k = int(np.floor(far * n_impostors + 1e-9))
    top = np.sort(np.asarray(impostor_top, dtype=np.float64))[::-1]
    if k >= n_impostors:
        return float(-np.inf), n_impostors
    if top.size <= k:
        raise ValueError(f"need the {k + 1} highest impostor scores for FAR {far}, got {top.size}")
    threshold = top[k]
    return float(threshold), int((top > threshold).sum())


def tar_at_far(genuine: np.ndarray, impostor_top: np.ndarray, n_impostors: int, fars) -> dict[str, TarAtFar]:
    """TAR at each FAR, keyed by ``repr(far)`` ("0.001", "1e-06"); see ``threshold_at_far`` for
    ``impostor_top``. TAR = #(genuine > threshold) / #genuine."""
    genuine = np.sort(np.asarray(genuine, dtype=np.float64))
    out = {}
    for far in fars:
        thr, above = threshold_at_far(impostor_top, n_impostors, far)
        tar = (genuine.size - np.searchsorted(genuine, thr, side="right")) / genuine.size
        out[repr(float(far))] = TarAtFar(
            far=float(far), tar=float(tar), threshold=thr, achieved_far=above / n_impostors,
            resolvable=far * n_impostors >= 1.0,
        )
    return out


def tar_at_far_pairs(scores: np.ndarray, labels: np.ndarray, fars) -> dict[str, TarAtFar]:
    """``tar_at_far`` for a plain list of scored pairs (all impostor scores at hand)."""
    genuine, impostor = _split(scores, labels)
    return tar_at_far(genuine, impostor, impostor.size, fars)


def cmc(ranks: np.ndarray, max_rank: int = 10) -> np.ndarray:
    """Cumulative match characteristic: ``out[r-1]`` = fraction of searches whose true match is at
    rank <= r (ranks are 1-based), for r = 1..max_rank."""
    ranks = np.asarray(ranks)
    if ranks.size == 0:
        raise ValueError("no searches to build a CMC from")
    if (ranks < 1).any():
        raise ValueError("ranks are 1-based")
    return np.array([(ranks <= r).mean() for r in range(1, max_rank + 1)])
