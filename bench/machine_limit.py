"""Section 1 — the machine's limit: fp32 (and bf16) GEMM GFLOP/s of this CPU with torch, and for
each backbone at batch 32 its inference img/s, GFLOPs/img and the fraction of the GEMM peak it
reaches, in fp32, fp32 channels_last and bf16 (autocast) channels_last; the best is reported.

    python -m bench.machine_limit [--quick]

fraction of peak = img/s x GFLOPs/img / GEMM GFLOP/s (FLOPs from torch.utils.flop_counter, a
multiply-add = 2 FLOPs, as the GEMM count 2·n³). Synthetic inputs: speed does not depend on pixels.
"""

from __future__ import annotations

import argparse
import json
import sys

from bench.common import median, progress, rates, recipe_network, default_recipe, spread
from bench.train_speed import ALL, forward_gflops

VARIANTS = ("fp32", "fp32_channels_last", "bf16_channels_last")


def gemm_gflops(n: int, dtype: str, seconds: float, repeats: int) -> list[float]:
    """GFLOP/s of an n x n x n matmul (2·n³ FLOPs per product)."""
    import torch

    dt = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g).to(dt), torch.randn(n, n, generator=g).to(dt)
    out = torch.empty(n, n, dtype=dt)
    return [r * 2 * n**3 / 1e9 for r in rates(lambda: torch.matmul(a, b, out=out), 1, seconds, repeats)]


def backbone_rates(name: str, kwargs: dict, size: tuple[int, int], batch: int, seconds: float, repeats: int,
                   variants=VARIANTS) -> dict:
    import torch

    from faceverify.backbones import build_backbone

    torch.manual_seed(0)
    model = build_backbone(name, input_size=size, **kwargs).eval()
    row = {"backbone": name, "kwargs": {k: v for k, v in kwargs.items() if k != "embedding_dim"}, "input": f"{size[0]}x{size[1]}",
           "batch": batch, "gflops_per_img": round(forward_gflops(model, size), 3), "img_s": {}}
    x = torch.randn(batch, 3, *size)
    for variant in variants:
        cl = variant.endswith("channels_last")
        m = model.to(memory_format=torch.channels_last) if cl else model.to(memory_format=torch.contiguous_format)
        xv = x.to(memory_format=torch.channels_last) if cl else x.contiguous()
        bf16 = variant.startswith("bf16")

        def forward():
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                m(xv)

        row["img_s"][variant] = spread(rates(forward, batch, seconds, repeats))
    return row


def run(opts: dict) -> dict:
    import torch

    quick = bool(opts.get("quick"))
    repeats = int(opts.get("repeats") or (2 if quick else 3))
    seconds = 0.5 if quick else 1.5
    n = 2048 if quick else 4096
    backbones = opts.get("backbones") or (["sphereface20", "mobilefacenet"] if quick else ALL)
    net = recipe_network(default_recipe())
    default_kwargs = {k: v for k, v in net["kwargs"].items() if k != "input_size"}
    bar = progress(2 + len(backbones) + 1, "1 machine limit")
    result = {"threads": torch.get_num_threads(), "gemm_n": n, "repeats": repeats, "window_s": seconds,
              "batch": 32, "mkldnn_bf16": bool(torch.backends.mkldnn.is_available())}
    result["gemm_fp32_gflops"] = spread(gemm_gflops(n, "fp32", seconds, repeats))
    bar.update()
    result["gemm_bf16_gflops"] = spread(gemm_gflops(n, "bf16", seconds, repeats))
    bar.update()
    peak = result["gemm_fp32_gflops"]["median"]
    rows = []
    jobs = [(b, {"embedding_dim": 512}, (112, 96), b) for b in backbones]
    jobs.append((net["backbone"], default_kwargs, tuple(net["kwargs"]["input_size"]), f"default recipe ({net['recipe']})"))
    for name, kwargs, size, label in jobs:
        row = backbone_rates(name, kwargs, size, 32, seconds, repeats)
        row["label"] = label
        best = max(row["img_s"], key=lambda v: row["img_s"][v]["median"])
        row["best_variant"] = best
        row["best_img_s"] = row["img_s"][best]["median"]
        row["fp32_img_s"] = row["img_s"]["fp32"]["median"]
        row["best_gflop_s"] = round(row["best_img_s"] * row["gflops_per_img"], 1)
        # the ratio: sustained network GFLOP/s over the fp32 GEMM peak measured above
        row["fraction_of_fp32_gemm_peak"] = round(row["best_gflop_s"] / peak, 3)
        row["fp32_fraction_of_fp32_gemm_peak"] = round(row["fp32_img_s"] * row["gflops_per_img"] / peak, 3)
        # bf16 runs on the bf16 units: also against the bf16 GEMM peak
        same_peak = result["gemm_bf16_gflops"]["median"] if best.startswith("bf16") else peak
        row["fraction_of_same_dtype_gemm_peak"] = round(row["best_gflop_s"] / same_peak, 3)
        rows.append(row)
        bar.update()
    result["backbones"] = rows
    bar.update()
    bar.close()
    result["bf16_gemm_speedup"] = round(result["gemm_bf16_gflops"]["median"] / peak, 2)
    result["variants_that_helped"] = {r["label"]: r["best_variant"] for r in rows}
    result["median_fraction_of_peak"] = round(median([r["fraction_of_fp32_gemm_peak"] for r in rows]), 3)
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--backbones", nargs="*")
    args = p.parse_args(argv)
    print(json.dumps(run({"quick": args.quick, "backbones": args.backbones}), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
