"""Section 4 — detection/alignment throughput for data preparation: images/s of
``faceverify prep`` (decode, MTCNN, face choice, 5-point alignment, packed shards) on the first
1,000 LFW images (identities in sorted order), with 1 and 2 workers.

Each run is the real command in a fresh process on a fresh destination; the rate is prep's own
``summary.json`` ``images_per_s`` (from the start of work, worker start-up included), the wall
rate also counts interpreter start and model loading. The source is a temporary folder of symlinks
to the shared LFW images (nothing is copied). Peer (optional): dlib's detection and alignment as
face_recognition does it (HOG upsample 1, 5-point shape, ``get_face_chip`` 150x150) in one
process on the first 300 of the same images.

    python -m bench.prep_speed [--quick] [--images N]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import REPO, peer_missing, progress, ratio, spread


def link_images(dst: Path, n: int) -> list[Path]:
    """``dst/<identity>/<image>`` symlinks to the first ``n`` LFW images."""
    from faceverify.paths import lfw_root

    root = lfw_root() / "images"
    picked = []
    for ident in sorted(p for p in root.iterdir() if p.is_dir()):
        for img in sorted(ident.glob("*.jpg")):
            if len(picked) == n:
                return picked
            (dst / ident.name).mkdir(parents=True, exist_ok=True)
            (dst / ident.name / img.name).symlink_to(img)
            picked.append(img)
    return picked


def prep_once(src: Path, dst: Path, workers: int, chunk: int) -> dict:
    cmd = [sys.executable, "-m", "faceverify", "prep", str(src), str(dst), "--workers", str(workers), "--chunk-size", str(chunk)]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    summary = json.loads((dst / "summary.json").read_text())
    return {"images_per_s": summary["images_per_s"], "wall_images_per_s": summary["images_total"] / wall,
            "kept": summary["images_kept"], "failed": summary["images_failed"]}


def dlib_rate(images: list[Path]) -> float:
    import dlib
    import face_recognition.api as fr

    def one(path: Path):
        img = fr.load_image_file(str(path))
        rects = fr.face_detector(img, 1)
        if rects:
            rect = max(rects, key=lambda r: r.width() * r.height())
            dlib.get_face_chip(img, fr.pose_predictor_5_point(img, rect), size=150, padding=0.25)

    one(images[0])  # warm-up
    t0 = time.perf_counter()
    for p in images:
        one(p)
    return len(images) / (time.perf_counter() - t0)


def run(opts: dict) -> dict:
    quick = bool(opts.get("quick"))
    n = int(opts.get("images") or (128 if quick else 1000))
    repeats = int(opts.get("repeats") or (1 if quick else 3))
    chunk = max(16, n // 8)  # >= 4 chunks per worker at 2 workers, so both stay busy to the end
    worker_counts = (1, 2)
    missing = peer_missing("dlib", opts.get("without", ()))
    bar = progress(len(worker_counts) * repeats + 1, "4 prep throughput")
    result = {"images": n, "repeats": repeats, "chunk_size": chunk, "source": "first LFW images, identities in sorted order"}
    with tempfile.TemporaryDirectory(prefix="fv-bench-prep-") as tmp:
        src = Path(tmp) / "lfw_subset"
        images = link_images(src, n)
        result["images"] = len(images)
        for workers in worker_counts:
            runs = []
            for r in range(repeats):
                runs.append(prep_once(src, Path(tmp) / f"out-{workers}-{r}", workers, chunk))
                bar.update()
            result[f"workers_{workers}"] = {
                "images_per_s": spread([x["images_per_s"] for x in runs]),
                "wall_images_per_s": spread([x["wall_images_per_s"] for x in runs]),
                "kept": runs[-1]["kept"], "failed": runs[-1]["failed"],
            }
        if missing:
            result["dlib"] = {"skipped": missing}
        else:
            subset = images[: min(len(images), 60 if quick else 300)]
            result["dlib"] = {"images": len(subset), "images_per_s": round(dlib_rate(subset), 2),
                              "pipeline": "HOG upsample 1 + 5-point shape + get_face_chip 150x150, 1 process"}
        bar.update()
    bar.close()
    one, two = result["workers_1"]["images_per_s"]["median"], result["workers_2"]["images_per_s"]["median"]
    result["scaling_2_vs_1_workers"] = ratio(two, one)
    result["workers_1_vs_dlib"] = ratio(one, None if missing else result["dlib"]["images_per_s"])
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--images", type=int)
    p.add_argument("--without-peer", action="append", default=[])
    args = p.parse_args(argv)
    print(json.dumps(run({"quick": args.quick, "images": args.images, "without": args.without_peer}), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
