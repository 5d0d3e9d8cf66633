"""Backbone cost and training speed on this machine's CPU.

For every backbone: parameters, GFLOPs per 112x96 image (forward; torch.utils.flop_counter, which
counts a multiply-add as 2 FLOPs), inference img/s and training img/s (forward + backward + SGD
step with an A-Softmax head), each measured in a fresh process so that its peak RSS is its own.
``--recipe`` measures the training step of a recipe (its backbone, head, classes and batch).

    python -m bench.train_speed --table                       # all backbones -> markdown table
    python -m bench.train_speed --recipe train/configs/cpu.yaml
    python -m bench.train_speed --recipe train/configs/casia_sphereface20_gpu.yaml --batch 2 --classes 10572

Synthetic inputs (the speed of a step does not depend on the pixels); data loading is not
included. Threads: torch's default (all cores) unless --threads.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
from pathlib import Path

from bench.common import median, rates, recipe_network

REPO = Path(__file__).resolve().parents[1]
ALL = ["lsoftmax_lfw", "sphereface20", "sphereface36", "sphereface64", "iresnet18", "iresnet50", "mobilefacenet"]


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


def measure(spec: dict) -> dict:
    """One measurement (runs inside its own process). Rates are the median of ``repeats`` timed
    windows of ``seconds`` each."""
    import torch

    from faceverify.backbones import build_backbone
    from faceverify.losses import MarginLoss, build_head

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    torch.manual_seed(0)
    size = tuple(spec.get("input_size", (112, 96)))
    model = build_backbone(spec["backbone"], embedding_dim=spec.get("embedding_dim", 512), input_size=size, **spec.get("kwargs", {}))
    result = {"backbone": spec["backbone"], "kwargs": spec.get("kwargs", {}), "input": f"{size[0]}x{size[1]}",
              "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 2), "threads": torch.get_num_threads()}
    model.eval()
    result["gflops"] = round(forward_gflops(model, size), 3)

    def timed(fn, batch: int, seconds: float) -> float:
        runs = rates(fn, batch, seconds, repeats)
        result.setdefault("runs", {})[fn.__name__] = [round(r, 2) for r in runs]
        return median(runs)

    seconds = float(spec.get("seconds", 8.0))
    repeats = int(spec.get("repeats", 1))
    if spec.get("infer", True):
        xb = torch.randn(int(spec.get("infer_batch", 32)), 3, *size)

        def infer():
            with torch.inference_mode():
                model(xb)

        result["infer_img_s"] = round(timed(infer, xb.shape[0], seconds), 1)
    batch = int(spec.get("batch", 32))
    head = build_head(spec.get("head", "asoftmax"), spec.get("embedding_dim", 512), int(spec.get("classes", 1000)),
                      **spec.get("head_kwargs", {"m": 4, "lamb": 5.0}))
    params = list(model.parameters()) + list(head.parameters())
    opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9, weight_decay=5e-4)
    loss_fn = MarginLoss()
    x = torch.randn(batch, 3, *size)
    y = torch.randint(0, int(spec.get("classes", 1000)), (batch,))
    model.train()
    amp = bool(spec.get("amp", False))

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            out = head(model(x), y)
        loss = loss_fn(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    result.update(train_batch=batch, classes=int(spec.get("classes", 1000)), amp=amp,
                  train_img_s=round(timed(step, batch, seconds), 1))
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


def recipe_spec(path: str, batch: int | None, classes: int | None) -> dict:
    from faceverify.training.config import load_config

    cfg = load_config(path)
    net = recipe_network(Path(path).resolve())
    head_kwargs = dict(cfg["head"].get("kwargs") or {})
    if cfg["head"]["name"] in ("asoftmax", "lsoftmax", "sphereface"):
        head_kwargs["lamb"] = float(cfg["head"]["lambda"]["lambda_min"]) if cfg["head"].get("lambda") else 0.0
    model_kwargs = {k: v for k, v in net["kwargs"].items() if k not in ("embedding_dim", "input_size")}
    return {"backbone": net["backbone"], "embedding_dim": net["kwargs"]["embedding_dim"],
            "kwargs": model_kwargs, "input_size": net["kwargs"]["input_size"],
            "head": cfg["head"]["name"], "head_kwargs": head_kwargs, "classes": classes or 1000,
            "batch": batch or cfg["train"]["batch_size"], "amp": bool(cfg["train"]["amp"]), "infer": False,
            "threads": cfg["train"].get("threads") or None, "recipe": path}


def gpu_recipe() -> Path:
    return REPO / "train" / "configs" / "casia_sphereface20_gpu.yaml"


def run(opts: dict) -> dict:
    """Bench section 7: training img/s of the default recipe (its backbone, head, batch; 1,000
    classes unless the recipe says) and of the GPU recipe's network at batch 2 on this CPU (10,572
    CASIA classes), each in a fresh process."""
    from bench.common import default_recipe, progress

    quick = bool(opts.get("quick"))
    timing = {"seconds": 1.0 if quick else 3.0, "repeats": int(opts.get("repeats") or (1 if quick else 3))}
    jobs = [("default_recipe", default_recipe(), None, None), ("gpu_recipe_batch2", gpu_recipe(), 2, 10572)]
    bar = progress(len(jobs), "7 training")
    result = {"synthetic_inputs": True, **timing}
    for key, recipe, batch, classes in jobs:
        spec = recipe_spec(str(recipe), batch, classes)
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
    parser.add_argument("--recipe", help="measure this recipe's training step")
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
            spec = {"backbone": name, "batch": args.batch or 32, "classes": args.classes or 1000, "seconds": args.seconds,
                    "repeats": args.repeats}
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
