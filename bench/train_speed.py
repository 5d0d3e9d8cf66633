"""Backbone cost and training speed on this machine's CPU.

For every backbone: parameters, GFLOPs per 112x96 image (forward; torch.utils.flop_counter, which
counts a multiply-add as 2 FLOPs), inference img/s and training img/s, each measured in a fresh
process so that its peak RSS is its own. ``--recipe`` measures a recipe's training (its backbone,
head, template, batch, amp, threads and DataLoader workers).

Training img/s is the trainer's own: :func:`faceverify.training.loop.train`, the loop of
``faceverify train`` (DataLoader + augmentation, forward, backward, optimizer step, logging), run
on a packed set of random pixels (the speed of a step does not depend on them) prepared like the
recipe's real one, and read from the img/s it logs. The first logged window is the warm-up.

    python -m bench.train_speed --table                       # all backbones -> markdown table
    python -m bench.train_speed --recipe train/configs/default.yaml
    python -m bench.train_speed --recipe train/configs/casia_sphereface20_gpu.yaml --batch 2 --classes 10572

Threads: torch's default (all cores) unless the recipe or --threads says.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import median, rates
from faceverify.training.loop import train

REPO = Path(__file__).resolve().parents[1]
ALL = ["lsoftmax_lfw", "sphereface20", "sphereface36", "sphereface64", "iresnet18", "iresnet50", "mobilefacenet"]
# what every timed run changes in a recipe: CPU, no validation, no TensorBoard, no distillation
# teacher (its targets would be labels of random pixels), data from the synthetic packed set
# optim.lr=0: a step costs the same at any learning rate, and on random crops at batch 2 a real one
# can diverge (the GPU recipe's lr 0.1 reached a NaN loss at step 7), which would end the measurement
BENCH_OVERRIDES = ["train.device=cpu", "val.every=0", "train.tensorboard=false", "distill.teacher=null", "data.select=[]",
                   "optim.lr=0.0"]


def forward_gflops(model, size: tuple[int, int]) -> float:
    """GFLOPs of one forward pass on one image (FlopCounterMode: a multiply-add counts as 2)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 3, *size))
    model.train(was_training)
    return counter.get_total_flops() / 1e9


def random_packed_set(root: Path, dcfg: dict, images: int, classes: int) -> Path:
    """A packed set of ``images`` random crops over ``classes`` identities, stored the way the
    trainer would prepare the recipe's sources (a 56x48 recipe reads 112x96 crops, area-averaged)."""
    import numpy as np

    from faceverify.align import DOWNSCALED, template_points
    from faceverify.packed import FORMAT, write_json_atomic, write_shard
    from faceverify.training.training_set import prepared_template

    _, factor = DOWNSCALED.get(dcfg["template"], (dcfg["template"], 1))
    # an integer downscale is read from full-size crops, as prepared; otherwise the template itself is stored
    template, pad = prepared_template(dcfg) if float(factor).is_integer() else (dcfg["template"], int(dcfg["pad"]))
    _, (height, width) = template_points(template, pad)
    names = [f"id{k:05d}" for k in range(classes)]
    crops = np.random.default_rng(0).integers(0, 256, (images, height, width, 3), dtype=np.uint8)
    identities = [names[i % classes] for i in range(images)]
    write_shard(root, 0, crops, {"identities": identities, "paths": [f"{n}/{i}.png" for i, n in enumerate(identities)]})
    write_json_atomic(root / "manifest.json", {"format": FORMAT, "template": template, "pad": pad, "crop_size": [height, width],
                                               "classes": names, "shards": [0], "wide": False})
    return root


def train_rate(cfg: dict, classes: int, seconds: float, repeats: int, workdir: Path) -> dict:
    """Training img/s of ``cfg`` through the trainer: a 3-step run sizes the windows, then a run
    of ``repeats + 1`` logged windows of >= ``seconds`` each; the median of all but the first
    window's logged img/s is the rate. Runs and data go under ``workdir``."""
    from faceverify.training.config import apply_override

    batch = int(cfg["train"]["batch_size"])

    def run(name: str, windows: int, steps_per_window: int) -> list[dict]:
        steps = windows * steps_per_window
        packed = random_packed_set(workdir / f"{name}_faces", cfg["data"], batch * (steps + 1), classes)  # one epoch
        run_cfg = cfg
        for item in [*BENCH_OVERRIDES, f"data.packed={packed}", f"train.steps={steps}", f"train.log_every={steps_per_window}",
                     f"train.checkpoint_every={steps}"]:
            run_cfg = apply_override(run_cfg, item)
        rows: list[dict] = []
        with contextlib.redirect_stdout(sys.stderr):  # the trainer's lines; stdout carries this process's JSON
            train(run_cfg, workdir / name, on_log=rows.append)
        return rows

    sizing = run("sizing", 3, 1)
    step_s = batch / median([r["images_per_s"] for r in sizing[1:]])
    per_window = max(2, math.ceil(seconds / step_s))
    timed = run("timed", repeats + 1, per_window)
    window_rates = [r["images_per_s"] for r in timed[1:]]
    return {"train_img_s": round(median(window_rates), 1), "train_windows": [round(r, 2) for r in window_rates],
            "train_steps_per_window": per_window, "data_workers": int(cfg["data"]["workers"])}


def speed_config(spec: dict) -> dict:
    """The recipe of a measurement: ``spec["recipe"]`` with ``spec["overrides"]``, its batch and threads."""
    from faceverify.training.config import load_config

    overrides = list(spec.get("overrides", []))
    if spec.get("batch"):
        overrides.append(f"train.batch_size={int(spec['batch'])}")
    if spec.get("threads"):
        overrides.append(f"train.threads={int(spec['threads'])}")
    return load_config(spec["recipe"], overrides)


def measure(spec: dict) -> dict:
    """One measurement (runs inside its own process). Inference: the median of ``repeats`` timed
    windows of ``seconds`` each (synthetic tensors); training: :func:`train_rate`."""
    import torch

    from faceverify.backbones import build_backbone
    from faceverify.training.config import template_size

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    torch.manual_seed(0)
    cfg = speed_config(spec)
    mcfg = cfg["model"]
    size = template_size(cfg["data"]["template"])
    kwargs = dict(mcfg.get("kwargs") or {})
    model = build_backbone(mcfg["backbone"], embedding_dim=int(mcfg["embedding_dim"]), input_size=size, **kwargs)
    result = {"backbone": mcfg["backbone"], "kwargs": kwargs, "input": f"{size[0]}x{size[1]}",
              "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 2), "head": cfg["head"]["name"],
              "recipe": spec["recipe"]}
    model.eval()
    result["gflops"] = round(forward_gflops(model, size), 3)
    seconds = float(spec.get("seconds", 8.0))
    repeats = int(spec.get("repeats", 1))
    if spec.get("infer", True):
        xb = torch.randn(int(spec.get("infer_batch", 32)), 3, *size)

        def infer():
            with torch.inference_mode():
                model(xb)

        runs = rates(infer, xb.shape[0], seconds, repeats)
        result["runs"] = {"infer": [round(r, 2) for r in runs]}
        result["infer_img_s"] = round(median(runs), 1)
    del model
    classes = int(spec.get("classes") or 1000)
    with tempfile.TemporaryDirectory(prefix="faceverify-train-speed-") as tmp:
        result.update(train_rate(cfg, classes, seconds, repeats, Path(tmp)))
    result.update(train_batch=int(cfg["train"]["batch_size"]), classes=classes, amp=bool(cfg["train"]["amp"]),
                  threads=torch.get_num_threads(), trainer=f"{train.__module__}.{train.__name__}")
    result["peak_rss_MB"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 0)
    return result


def run_isolated(spec: dict) -> dict:
    out = subprocess.run([sys.executable, "-m", "bench.train_speed", "--one", json.dumps(spec)], cwd=REPO,
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"measurement {spec} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    lines = ["| backbone | params (M) | GFLOPs @112x96 | CPU inference img/s (batch 32) | CPU training img/s (batch) | peak RSS (MB) |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['backbone']} | {r['params_M']} | {r['gflops']:.2f} | {r.get('infer_img_s', '-')} | "
                     f"{r['train_img_s']} ({r['train_batch']}) | {r['peak_rss_MB']:.0f} |")
    return "\n".join(lines)


def recipe_spec(path: str, batch: int | None, classes: int | None, overrides: list[str] = ()) -> dict:
    """A training measurement of recipe ``path`` (its own batch unless ``batch``; 1,000 classes unless ``classes``)."""
    return {"recipe": str(path), "overrides": list(overrides), "batch": batch, "classes": classes or 1000, "infer": False}


def backbone_spec(name: str, batch: int, classes: int) -> dict:
    """A row of the backbone table: the paper recipe (112x96, A-Softmax m=4, fp32) with ``name`` as
    its backbone, one DataLoader worker as in this CPU's recipes."""
    return {"recipe": str(gpu_recipe()), "batch": batch, "classes": classes,
            "overrides": [f"model.backbone={name}", "model.kwargs={}", "model.embedding_dim=512", "train.amp=false", "data.workers=1"]}


def gpu_recipe() -> Path:
    return REPO / "train" / "configs" / "casia_sphereface20_gpu.yaml"


def run(opts: dict) -> dict:
    """Bench section 7: training img/s of the default recipe (its backbone, head, batch, workers;
    1,000 classes) and of the GPU recipe's network at batch 2 on this CPU (10,572 CASIA classes; one
    DataLoader worker, not the GPU machine's 8), each in a fresh process, through the trainer."""
    from bench.common import default_recipe, progress

    quick = bool(opts.get("quick"))
    timing = {"seconds": 1.0 if quick else 3.0, "repeats": int(opts.get("repeats") or (1 if quick else 3))}
    jobs = [("default_recipe", default_recipe(), None, None, []), ("gpu_recipe_batch2", gpu_recipe(), 2, 10572, ["data.workers=1"])]
    bar = progress(len(jobs), "7 training")
    result = {"synthetic_inputs": True, "trainer": f"{train.__module__}.{train.__name__}", **timing}
    for key, recipe, batch, classes, overrides in jobs:
        spec = recipe_spec(str(recipe), batch, classes, overrides)
        spec.update(timing)
        if opts.get("threads"):
            spec["threads"] = int(opts["threads"])
        row = run_isolated(spec)
        row["recipe"] = str(recipe.relative_to(REPO))
        result[key] = row
        bar.update()
    bar.close()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--table", action="store_true", help="measure every backbone and print a markdown table")
    parser.add_argument("--backbones", nargs="*", default=ALL)
    parser.add_argument("--batch", type=int, default=None, help="training batch (default 32; recipe: its total batch)")
    parser.add_argument("--classes", type=int, default=None, help="identities of the head (default 1000)")
    parser.add_argument("--recipe", help="measure this recipe's training")
    parser.add_argument("--seconds", type=float, default=8.0, help="minimum timed seconds per measurement")
    parser.add_argument("--repeats", type=int, default=1, help="timed windows per measurement (the median is reported)")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(json.loads(args.one))))
        return 0
    env = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "python": platform.python_version()}
    if args.recipe:
        spec = recipe_spec(args.recipe, args.batch, args.classes)
        spec.update(seconds=args.seconds, repeats=args.repeats)
        if args.threads:
            spec["threads"] = args.threads
        rows = [run_isolated(spec)]
        r = rows[0]
        print(f"{args.recipe}: {r['backbone']} {r['kwargs']} batch {r['train_batch']}, {r['classes']} classes, "
              f"amp {r['amp']}: {r['train_img_s']} img/s training, peak RSS {r['peak_rss_MB']:.0f} MB, "
              f"{r['threads']} threads, {r['gflops']:.2f} GFLOPs/img forward")
    else:
        rows = []
        for name in args.backbones:
            spec = backbone_spec(name, args.batch or 32, args.classes or 1000)
            spec.update(seconds=args.seconds, repeats=args.repeats)
            if args.threads:
                spec["threads"] = args.threads
            rows.append(run_isolated(spec))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"environment": env, "results": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
