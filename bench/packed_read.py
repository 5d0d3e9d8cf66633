"""Read rate of a packed set through a PyTorch DataLoader (random order, uint8 crops, the
training transform), the number behind the README's choice of memory-mapped shards.

    .venv/bin/python -m bench.packed_read runs/prep_train --workers 2 --batches 200
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from torch.utils.data import DataLoader

from faceverify.packed import PackedFaces


def collate(batch):
    crops, labels = zip(*batch)
    return torch.from_numpy(np.stack(crops)), torch.tensor(labels)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("packed")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--batches", type=int, default=200)
    args = p.parse_args(argv)
    faces = PackedFaces(args.packed)
    loader = DataLoader(faces, batch_size=args.batch_size, shuffle=True, num_workers=args.workers, collate_fn=collate,
                        persistent_workers=args.workers > 0)
    seen, start = 0, None
    for _ in range(2):  # second epoch: page cache warm, as in training
        for i, (crops, _) in enumerate(loader):
            if i == 2 and start is None:
                start = time.perf_counter()  # skip worker start-up
            if start is not None:
                seen += len(crops)
            if seen >= args.batches * args.batch_size:
                break
        if seen >= args.batches * args.batch_size:
            break
    elapsed = time.perf_counter() - start
    print(json.dumps({"images": len(faces), "read_images_per_s": round(seen / elapsed), "workers": args.workers,
                      "batch_size": args.batch_size, "crop": list(faces.crop_size)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
