"""The ablation report: one row per training run (what it learned from, LFW View 1 and View 2
accuracy) and every run's training curves in one figure. Two tables: the loss ablation (the head
is the only difference) and, when the runs distil a teacher, the distillation ablation (which
terms, crop size and data each row trained with).

A run directory is what ``faceverify train`` writes (``config.yaml``, ``metrics.csv``, ``val.csv``)
plus the evaluations ``scripts/ablation.sh`` adds: ``view1/view1.json`` (``faceverify eval
lfw-view1``), ``view1_nocenter/view1.json`` (the same with ``--no-center``: analysis only) and
``lfw/lfw.json`` (``faceverify eval lfw``).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import yaml

from ..errors import DataNotFoundError
from ..paths import display_path
from .report import _plt, write_json


def head_label(cfg: dict) -> str:
    """'A-Softmax (m=4)'-style name of a recipe's loss."""
    head = cfg["head"]
    name, kw = head["name"], head.get("kwargs") or {}
    names = {"softmax": "softmax", "lsoftmax": "L-Softmax", "asoftmax": "A-Softmax", "sphereface": "A-Softmax",
             "normface": "NormFace", "cosface": "CosFace", "amsoftmax": "CosFace", "arcface": "ArcFace"}
    label = names.get(name, name)
    if kw:
        label += " (" + ", ".join(f"{k}={v}" for k, v in kw.items()) + ")"
    if head.get("regularizer"):
        label += f" + Kobayashi reg. (λ={head['regularizer']})"
    return label


def losses_label(cfg: dict) -> str:
    """What a run learned from: the distillation terms (``distill.*`` weights) and/or the margin head."""
    d = cfg.get("distill") or {}
    if not d.get("teacher"):
        return head_label(cfg)
    terms = [name for name, key in (("raw", "raw"), ("cosine", "cosine"), ("relational", "relational")) if float(d.get(key) or 0) > 0]
    teachers = " + ".join(map(str, d["teacher"])) if isinstance(d["teacher"], list) else str(d["teacher"])
    parts = [f"{teachers}: distillation ({' + '.join(terms)})"] if terms else []
    margin = float(d.get("margin") or 0)
    if margin > 0:
        parts.append(head_label(cfg) + ("" if not terms else f" x{margin:g}"))
    return " + ".join(parts)


def _read_csv(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        return {}
    with path.open() as f:
        rows = list(csv.DictReader(f))
    # an empty cell (a column a run does not log, e.g. the teacher agreement without a teacher term) is NaN
    return {k: np.array([float(r[k]) if r[k] not in ("", None) else np.nan for r in rows]) for k in rows[0]} if rows else {}


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def summarize_run(run_dir: str | Path) -> dict:
    run = Path(run_dir)
    if not (run / "config.yaml").is_file():
        raise DataNotFoundError(f"{run} is not a training run (no config.yaml); give the --out folders of `faceverify train`.")
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    view1, view2 = _read_json(run / "view1" / "view1.json"), _read_json(run / "lfw" / "lfw.json")
    view1_raw = _read_json(run / "view1_nocenter" / "view1.json")
    metrics = _read_csv(run / "metrics.csv")
    summary = _read_json(run / "summary.json") or {}
    data = cfg.get("data") or {}
    return {
        "run": run.name, "path": display_path(run), "loss": head_label(cfg), "seed": int(cfg["seed"]),
        "distills": bool((cfg.get("distill") or {}).get("teacher")), "losses": losses_label(cfg),
        "template": data.get("template"), "data": list(data.get("select") or data.get("sources") or []),
        "steps": int(metrics["step"][-1]) if metrics else 0,
        "final_train_loss": float(metrics["loss"][-10:].mean()) if metrics else None,
        "final_train_accuracy": float(metrics["accuracy"][-10:].mean()) if metrics else None,
        "view1_accuracy": view1["accuracy_devtest"] if view1 else None,
        "view1_accuracy_no_centring": view1_raw["accuracy_devtest"] if view1_raw else None,
        "view2_accuracy": view2["accuracy_mean"] if view2 else None,
        "view2_std": view2["accuracy_std"] if view2 else None,
        "view2_tar_far_1e-3": (view2 or {}).get("tar_at_far", {}).get("0.001"),
        "train_images_per_s": summary.get("images_per_s"),
        "train_minutes": round(summary["seconds"] / 60, 1) if summary.get("seconds") else None,
        "ms_per_face": (_read_json(run / "speed.json") or {}).get("ms_per_face"),  # python -m bench.onnx_face_speed --write
    }


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f}"


def markdown_table(rows: list[dict]) -> str:
    lines = ["| loss | seed | steps | LFW View 1 (DevTest) % | View 1, no centring % | LFW View 2 10-fold % | "
             "final train acc % |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        v2 = "—" if r["view2_accuracy"] is None else f"{_pct(r['view2_accuracy'])} ± {_pct(r['view2_std'])}"
        lines.append(f"| {r['loss']} | {r['seed']} | {r['steps']} | {_pct(r['view1_accuracy'])} | "
                     f"{_pct(r['view1_accuracy_no_centring'])} | {v2} | "
                     f"{_pct(r['final_train_accuracy'])} |")
    return "\n".join(lines) + "\n"


def distill_table(rows: list[dict]) -> str:
    """The distillation ablation: each row's terms, crop size and data, at one budget."""
    lines = ["| run | learns from | crop | data | steps | LFW View 1 (DevTest) % | LFW View 2 10-fold % | "
             "TAR @ FAR 1e-3 % | training min | ms/face |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        v2 = "—" if r["view2_accuracy"] is None else f"{_pct(r['view2_accuracy'])} ± {_pct(r['view2_std'])}"
        minutes = "—" if r["train_minutes"] is None else f"{r['train_minutes']:.0f}"
        speed = "—" if r.get("ms_per_face") is None else f"{r['ms_per_face']:.1f}"
        lines.append(f"| {r['run']} | {r['losses']} | {r['template']} | {', '.join(r['data'])} | {r['steps']} | "
                     f"{_pct(r['view1_accuracy'])} | {v2} | {_pct(r['view2_tar_far_1e-3'])} | {minutes} | {speed} |")
    return "\n".join(lines) + "\n"


def report_table(rows: list[dict]) -> str:
    return distill_table(rows) if any(r["distills"] for r in rows) else markdown_table(rows)


def plot_curves(path: str | Path, run_dirs: list[str | Path]) -> Path:
    """Training loss, training accuracy and View 1 validation accuracy of every run, one panel each."""
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), dpi=110)
    for run in map(Path, run_dirs):
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        label = f"{run.name}: {losses_label(cfg)}" if (cfg.get("distill") or {}).get("teacher") else f"{head_label(cfg)} s{cfg['seed']}"
        m, v = _read_csv(run / "metrics.csv"), _read_csv(run / "val.csv")
        if m:
            line, = axes[0].plot(m["step"], m["loss"], lw=0.8, label=label)
            # a distillation run: the student's agreement with the teacher (its margin head may be off)
            axes[1].plot(m["step"], m["distill_cos"] if np.isfinite(m.get("distill_cos", [np.nan])).any() else m["accuracy"], lw=0.8, color=line.get_color())
            if v:
                axes[2].plot(v["step"], v["accuracy"], marker="o", ms=3, color=line.get_color())
    for ax, title in zip(axes, ("training loss (each loss on its own scale)", "training accuracy (margin-free argmax); distillation: cos(student, teacher)",
                                "LFW View 1 DevTest accuracy (best threshold, MTCNN alignment)")):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_report(run_dirs: list[str | Path], out_dir: str | Path, command: str) -> dict:
    rows = [summarize_run(r) for r in run_dirs]
    out = Path(out_dir)
    write_json(out / "ablation.json", {"runs": rows, "command": command})
    plot_curves(out / "ablation_curves.png", run_dirs)
    title = "Distillation ablation" if any(r["distills"] for r in rows) else "Loss ablation"
    (out / "ablation.md").write_text(f"# {title}\n\n`{command}`\n\n{report_table(rows)}\n"
                                     "![training curves](ablation_curves.png)\n")
    return {"runs": rows}
