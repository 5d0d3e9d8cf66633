"""Reports: JSON (the machine-readable result), Markdown (for humans and docs) and PNG plots (ROC,
CMC, score histograms). Plotting uses matplotlib's Agg backend (no display needed)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np


def write_json(path: str | Path, data: dict) -> Path:
    """Write ``data`` atomically (tmp file + rename), NaN/inf as null so the file is strict JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_clean(data), indent=2) + "\n")
    os.replace(tmp, path)
    return path


def _clean(obj):
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_roc(path: str | Path, curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str) -> Path:
    """ROC (TAR vs FAR, FAR on a log axis) of one or more score sets: ``{label: (far, tar)}``."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=110)
    for label, (far, tar) in curves.items():
        far = np.asarray(far)
        keep = far > 0
        ax.plot(far[keep], np.asarray(tar)[keep], label=label)
    ax.set_xscale("log")
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_ylim(0, 1.005)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_histogram(path: str | Path, genuine: np.ndarray, impostor: np.ndarray, title: str,
                   thresholds: dict[str, float] | None = None, impostor_label: str = "different person") -> Path:
    """Histograms of genuine and impostor scores (densities), with optional threshold lines."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=110)
    lo = float(min(np.min(genuine), np.min(impostor)))
    hi = float(max(np.max(genuine), np.max(impostor)))
    bins = np.linspace(lo, hi, 80)
    ax.hist(impostor, bins=bins, density=True, alpha=0.55, label=f"{impostor_label} (n={len(impostor):,})", color="tab:red")
    ax.hist(genuine, bins=bins, density=True, alpha=0.55, label=f"same person (n={len(genuine):,})", color="tab:green")
    for name, thr in (thresholds or {}).items():
        if thr is not None and np.isfinite(thr):
            ax.axvline(thr, linestyle="--", linewidth=1, color="k")
            ax.text(thr, ax.get_ylim()[1] * 0.95, f" {name}", rotation=90, va="top", fontsize=7)
    ax.set_xlabel("cosine similarity")
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_cmc(path: str | Path, curves: dict[str, np.ndarray], title: str) -> Path:
    """CMC curves (identification rate vs rank), one per distractor set size."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=110)
    for label, curve in curves.items():
        ranks = np.arange(1, len(curve) + 1)
        ax.plot(ranks, np.asarray(curve) * 100, marker="o", markersize=3, label=label)
    ax.set_xlabel("rank")
    ax.set_ylabel("identification rate (%)")
    ax.set_xticks(range(1, max(len(c) for c in curves.values()) + 1))
    ax.grid(True, alpha=0.3)
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8, title="distractors")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def pct(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{100 * x:.{digits}f}%"


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def lfw_markdown(d: dict, command: str) -> str:
    """The Markdown report of an LFW run (``d`` is the lfw.json content)."""
    folds = markdown_table(["fold"] + [str(i + 1) for i in range(len(d["folds"]))],
                           [["accuracy"] + [pct(a) for a in d["folds"]],
                            ["threshold"] + [f"{t:.4f}" for t in d["fold_thresholds"]]])
    tar_rows = [[f"TAR @ FAR={k}", pct(v)] for k, v in d["tar_at_far"].items()]
    return "\n".join([
        "# LFW verification report",
        "",
        f"Command: `{command}`",
        "",
        f"Model: `{d.get('model')}`; alignment: {d['alignment']}; flip: {d['flip']}; "
        f"centring: {d['center']}; PCA: {d['pca']}; 10-fold score: {d.get('metric', 'cosine')}",
        f"Pairs: {d['pairs']} ({d['pairs_same']} same) from `{d.get('pairs_file')}`; images: {d['images']}; "
        f"no face found (evaluated through the centre-crop fallback): {d['no_face']} images in {d['no_face_pairs']} pairs.",
        "",
        "## 10-fold accuracy (SphereFace protocol)",
        "",
        f"**{pct(d['accuracy_mean'])} ± {pct(d['accuracy_std'])}** (mean ± std over {len(d['folds'])} folds; "
        f"std with ddof=1: {pct(d['accuracy_std_ddof1'])})",
        "",
        folds,
        "",
        "## All pairs (plain cosine, no centring/PCA: the score the service uses)",
        "",
        markdown_table(["metric", "value"], [["AUC", f"{d['auc']:.5f}"], ["EER", pct(d["eer"])]] + tar_rows + [
            ["accuracy with the best threshold chosen on all pairs (OPTIMISTIC, not comparable to the 10-fold figure)",
             pct(d["accuracy_best_threshold_all_pairs_OPTIMISTIC"])]]),
        "",
        "Plots: `lfw_roc.png`, `lfw_scores.png`.",
        "",
    ])


def megaface_markdown(d: dict, command: str) -> str:
    sizes = [str(s) for s in d["distractor_sizes"]]
    rows = []
    for s in sizes:
        tar = d["tar_at_far_by_size"][s]
        rows.append([s, pct(d["rank1"][s]), pct(d["cmc"][s][-1])] + [pct(tar[k]["tar"]) for k in tar] + [f"{d['search_seconds'][s]:.2f}"])
    far_keys = list(d["tar_at_far_by_size"][sizes[-1]])
    header = ["distractors", "rank-1", f"rank-{len(d['cmc'][sizes[-1]])}"] + [f"TAR@FAR={k}" for k in far_keys] + ["search s"]
    warning = [f"**{d['WARNING']}**", ""] if d.get("WARNING") else []
    return "\n".join([
        "# MegaFace-style identification / verification report",
        "",
        *warning,
        f"Command: `{command}`",
        "",
        f"Model: `{d.get('model')}`; flip: {d.get('flip')}; probes: {d['probe_images']} images of "
        f"{d['probe_identities']} identities ({d['searches']:,} probe-gallery searches); "
        f"distractors available: {d['distractors_available']:,}; seed {d['seed']}.",
        "",
        markdown_table(header, rows),
        "",
        "TAR@FAR: genuine = probe-gallery pairs, impostor = every probe image x every distractor of that set; "
        "a FAR below 1/#impostors cannot be resolved (see `tar_at_far_by_size[...].resolvable`).",
        "",
        "Plots: `megaface_cmc.png`, `megaface_scores.png`.",
        "",
    ])
