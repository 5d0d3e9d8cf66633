"""Section 1 — the machine's limit: fp32 (and bf16) GEMM GFLOP/s of this CPU, and for each
backbone at batch 32 its inference img/s, GFLOPs/img and the fraction of the GEMM peak it
reaches, in fp32, fp32 channels_last and bf16 (autocast) channels_last; the best is reported.

The fp32 GEMM is measured three ways, and the peak is the fastest: ``torch.matmul`` of two n x n
matrices (torch's BLAS, MKL: on AMD CPUs MKL takes a slower code path), the same-size product as
a 1x1 convolution (torch's oneDNN, the library the convolutions of our networks run on) and
numpy's ``@`` (OpenBLAS). Without that, a network could "exceed" the machine's limit.

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


def gemm_gflops(n: int, how: str, seconds: float, repeats: int) -> list[float]:
    """GFLOP/s of an n x n x n matrix product (2·n³ FLOPs) computed ``how``:
    torch_fp32 / torch_bf16 (torch.matmul), onednn_conv1x1_fp32 / _bf16, numpy_fp32."""
    import numpy as np
    import torch

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    if how in ("torch_fp32", "torch_bf16"):
        if how == "torch_bf16":
            a, b = a.bfloat16(), b.bfloat16()
        out = torch.empty(n, n, dtype=a.dtype)
        fn = lambda: torch.matmul(a, b, out=out)  # noqa: E731
    elif how.startswith("onednn_conv1x1"):
        # (n rows = 1 x side x side pixels, n input channels) @ (n x n weights), channels_last
        side = int(round(n**0.5))
        x = a[: side * side].reshape(1, side, side, n).permute(0, 3, 1, 2)  # NCHW view of NHWC memory
        conv = torch.nn.Conv2d(n, n, 1, bias=False).to(memory_format=torch.channels_last)
        if how.endswith("bf16"):
            x, conv = x.bfloat16(), conv.bfloat16()

        def fn():
            with torch.inference_mode():
                conv(x)

        n_rows = side * side
        return [r * 2 * n_rows * n * n / 1e9 for r in rates(fn, 1, seconds, repeats)]
    elif how == "numpy_fp32":
        an, bn = a.numpy(), b.numpy()
        outn = np.empty((n, n), np.float32)
        fn = lambda: np.matmul(an, bn, out=outn)  # noqa: E731
    else:
        raise ValueError(how)
    return [r * 2 * n**3 / 1e9 for r in rates(fn, 1, seconds, repeats)]


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
    bar = progress(4 + len(backbones) + 1, "1 machine limit")
    result = {"threads": torch.get_num_threads(), "gemm_n": n, "repeats": repeats, "window_s": seconds,
              "batch": 32, "mkldnn_bf16": bool(torch.backends.mkldnn.is_available())}
    result["gemm_fp32_by_library"] = {}
    for how in ("torch_fp32", "onednn_conv1x1_fp32", "numpy_fp32"):
        result["gemm_fp32_by_library"][how] = spread(gemm_gflops(n, how, seconds, repeats))
        bar.update()
    result["gemm_fp32_source"] = max(result["gemm_fp32_by_library"], key=lambda k: result["gemm_fp32_by_library"][k]["median"])
    result["gemm_fp32_gflops"] = result["gemm_fp32_by_library"][result["gemm_fp32_source"]]  # the peak
    result["gemm_bf16_by_library"] = {how: spread(gemm_gflops(n, how, seconds, repeats)) for how in ("torch_bf16", "onednn_conv1x1_bf16")}
    result["gemm_bf16_gflops"] = max(result["gemm_bf16_by_library"].values(), key=lambda v: v["median"])
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
        # how close training gets to the machine: sustained network GFLOP/s over the fp32 GEMM peak measured above
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
