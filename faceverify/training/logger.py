"""Training metrics: a CSV (``step,loss,accuracy,lr,lambda``), TensorBoard scalars and a curve PNG.

Only the main process writes. On resume the CSV is cut back to the resumed step, so rows written
after the last checkpoint by a killed run are replaced, not duplicated.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

COLUMNS = ["step", "loss", "accuracy", "lr", "lambda"]


def truncate_csv(path: Path, last_step: int) -> None:
    """Keep the header and the rows with step <= ``last_step`` (atomic rewrite)."""
    if not path.is_file():
        return
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        return
    kept = [rows[0]] + [r for r in rows[1:] if r and r[0].isdigit() and int(r[0]) <= last_step]
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as fh:
        csv.writer(fh).writerows(kept)
    os.replace(tmp, path)


def read_csv(path: Path) -> list[dict]:
    with Path(path).open(newline="") as fh:
        return list(csv.DictReader(fh))


class CsvLog:
    """Append rows to a CSV with fixed columns; flushed every row, so a kill loses nothing written."""

    def __init__(self, path: Path, columns: list[str], resume_step: int | None = None):
        self.path, self.columns = Path(path), list(columns)
        if resume_step is not None:
            truncate_csv(self.path, resume_step)
        fresh = resume_step is None or not self.path.is_file() or self.path.stat().st_size == 0
        self.fh = self.path.open("w" if fresh else "a", newline="")
        self.writer = csv.writer(self.fh)
        if fresh:
            self.writer.writerow(self.columns)
            self.fh.flush()

    def write(self, row: dict) -> None:
        self.writer.writerow([_fmt(row.get(c, "")) for c in self.columns])
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


class MetricsLogger:
    """``DIR/metrics.csv`` (exactly COLUMNS), ``DIR/val.csv``, TensorBoard in ``DIR/tb`` and
    ``DIR/training_curve.png`` at :meth:`close`. A no-op on non-main processes."""

    def __init__(self, out_dir: Path, enabled: bool = True, resume_step: int | None = None, tensorboard: bool = True,
                 extra_columns: tuple[str, ...] = ()):
        self.out_dir, self.enabled = Path(out_dir), enabled
        self.extra_columns = tuple(extra_columns)
        self.train = self.val = self.tb = None
        if not enabled:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.train = CsvLog(self.out_dir / "metrics.csv", COLUMNS + list(self.extra_columns), resume_step)
        self.val = CsvLog(self.out_dir / "val.csv", ["step", "pairs", "accuracy", "threshold", "auc"], resume_step)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.out_dir / "tb"), purge_step=resume_step + 1 if resume_step is not None else None)

    def log_train(self, step: int, loss: float, accuracy: float, lr: float, lamb: float, images_per_s: float | None = None,
                  extra: dict | None = None) -> None:
        if not self.enabled:
            return
        extra = {k: v for k, v in (extra or {}).items() if k in self.extra_columns}
        self.train.write({"step": step, "loss": loss, "accuracy": accuracy, "lr": lr, "lambda": lamb, **extra})
        if self.tb is not None:
            for key, value in (("loss", loss), ("accuracy", accuracy), ("lr", lr), ("lambda", lamb), ("images_per_s", images_per_s),
                               *extra.items()):
                if value is not None:
                    self.tb.add_scalar(f"train/{key}", value, step)

    def log_val(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        self.val.write({"step": step, **metrics})
        if self.tb is not None:
            for key in ("accuracy", "auc"):
                if key in metrics:
                    self.tb.add_scalar(f"val_lfw_view1/{key}", metrics[key], step)

    def close(self, plot: bool = True) -> Path | None:
        if not self.enabled:
            return None
        self.train.close()
        self.val.close()
        if self.tb is not None:
            self.tb.close()
        return plot_curves(self.out_dir) if plot else None


def plot_curves(out_dir: Path) -> Path | None:
    """``training_curve.png``: loss, training accuracy, lr and lambda against step (+ validation)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_csv(out_dir / "metrics.csv")
    if not rows:
        return None
    steps = [int(r["step"]) for r in rows]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    keys = COLUMNS[1:]
    if "distill_cos" in rows[0] and not any(float(r["lambda"] or 0) > 0 for r in rows):
        keys = keys[:-1] + ["distill_cos"]  # a distillation run: the teacher agreement instead of an unused lambda
    for ax, key in zip(axes.flat, keys):
        ax.plot(steps, [float(r[key] or "nan") for r in rows], lw=1)
        ax.set_title({"accuracy": "training accuracy (cos logits)", "distill_cos": "cosine to centred teacher targets"}.get(key, key))
        ax.set_xlabel("step")
        if key == "lambda" and any(float(r[key]) > 0 for r in rows):
            ax.set_yscale("log")
    val_path = out_dir / "val.csv"
    val = read_csv(val_path) if val_path.is_file() else []
    if val:
        axes[0, 1].plot([int(r["step"]) for r in val], [float(r["accuracy"]) for r in val], "o-", label="LFW View 1 (DevTest)")
        axes[0, 1].legend()
    fig.tight_layout()
    path = out_dir / "training_curve.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
