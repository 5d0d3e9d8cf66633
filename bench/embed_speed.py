"""Section 2 — embedding throughput: our backbones against facenet-pytorch's InceptionResnetV1
(architecture only, random weights: a speed comparison, not an accuracy one) at batch 1 and 32.

Same input pipeline for every network: aligned uint8 crops (N, H, W, 3) -> ``crops_to_tensor``
((x - 127.5) / 128, which is also facenet-pytorch's ``fixed_image_standardization``) -> network
(fp32, torch.inference_mode) -> L2-normalised numpy vectors. Each network gets its native crop:
ours 112x96 (or the default recipe's template), InceptionResnetV1 160x160 (facenet-pytorch's
``image_size``). Crop pixels are random: speed does not depend on them.

    python -m bench.embed_speed [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from bench.common import default_recipe, peer_missing, progress, rates, ratio, recipe_network, spread
from bench.train_speed import forward_gflops

BATCHES = (1, 32)


def embed_fn(model, crops: np.ndarray):
    import torch

    from faceverify.transforms import crops_to_tensor

    def embed():
        with torch.inference_mode():
            v = model(crops_to_tensor(crops)).numpy()
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    return embed


def measure(model, size: tuple[int, int], seconds: float, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    out = {"input": f"{size[0]}x{size[1]}", "gflops_per_img": round(forward_gflops(model, size), 3)}
    for batch in BATCHES:
        crops = rng.integers(0, 256, (batch, *size, 3), dtype=np.uint8)
        out[f"batch{batch}_img_s"] = spread(rates(embed_fn(model, crops), batch, seconds, repeats))
    return out


def run(opts: dict) -> dict:
    import torch

    from faceverify.backbones import build_backbone

    quick = bool(opts.get("quick"))
    repeats = int(opts.get("repeats") or (2 if quick else 3))
    seconds = 0.5 if quick else 1.5
    net = recipe_network(default_recipe())
    ours = [(f"default recipe ({net['backbone']}, {net['template']})", net["backbone"], net["kwargs"])]
    for name in ([] if quick else ["sphereface20", "iresnet50"]) + ["mobilefacenet"]:
        ours.append((name, name, {"embedding_dim": 512, "input_size": [112, 96]}))
    missing = peer_missing("facenet", opts.get("without", ()))
    bar = progress(len(ours) + 1, "2 embedding throughput")
    result = {"threads": torch.get_num_threads(), "repeats": repeats, "window_s": seconds, "precision": "fp32",
              "pipeline": "uint8 crops -> crops_to_tensor -> network -> L2-normalised numpy"}
    peer = None
    if missing:
        result["peer"] = {"skipped": missing}
    else:
        from facenet_pytorch import InceptionResnetV1

        torch.manual_seed(0)
        peer = measure(InceptionResnetV1(pretrained=None, classify=False).eval(), (160, 160), seconds, repeats)
        peer["name"] = "facenet-pytorch InceptionResnetV1 (random weights)"
        result["peer"] = peer
    bar.update()
    rows = []
    for label, name, kwargs in ours:
        torch.manual_seed(0)
        model = build_backbone(name, **kwargs).eval()
        row = {"label": label, "backbone": name, **measure(model, tuple(kwargs["input_size"]), seconds, repeats)}
        for batch in BATCHES:
            key = f"batch{batch}_img_s"
            row[f"batch{batch}_vs_peer"] = ratio(row[key]["median"], peer[key]["median"] if peer else None)
        rows.append(row)
        bar.update()
    bar.close()
    result["ours"] = rows
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    print(json.dumps(run({"quick": args.quick}), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
