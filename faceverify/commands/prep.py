"""``faceverify prep SRC [SRC ...] DST``: identity folders -> packed aligned training set
(``faceverify.prep.prepare_from_files``); prints the run's summary as JSON."""

from __future__ import annotations

import argparse
import json

from ..detect import DEFAULT_POLICY, SELECTION_POLICIES
from ..prep import CASIA_LFW_OVERLAP, prepare_from_files
from . import run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="faceverify prep", description="faceverify prep SRC [SRC ...] DST: identity folders -> packed aligned training set.")
    p.add_argument("src", nargs="+", help="identity folders (<identity>/<image>); several are merged, identities prefixed by folder name")
    p.add_argument("dst", help="output folder (re-run the same command to resume)")
    p.add_argument("--template", default="112x96", choices=["112x96", "112x112"])
    p.add_argument("--pad", type=int, default=2, help="margin stored around the crop for random-crop augmentation (default 2: 116x100)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--landmarks", help="landmark file (SphereFace format); listed images are aligned from it, not MTCNN")
    p.add_argument("--compare-landmarks", help="landmark file to compare MTCNN's points with (adds landmark_nme to summary.json)")
    p.add_argument("--landmark-scale", type=float, default=1.0,
                   help="multiply the file's coordinates by this (SphereFace's lfw_landmark.txt on the shared 150x150 LFW: 0.6)")
    p.add_argument("--min-score", type=float, default=0.95, help="MTCNN probability below which a detection is rejected")
    p.add_argument("--policy", default=DEFAULT_POLICY, choices=SELECTION_POLICIES)
    p.add_argument("--exclude", action="append", default=[], help="file of identity names to leave out (e.g. lfw/lfw-names.txt); repeatable")
    p.add_argument("--no-casia-exclusions", action="store_true", help=f"keep CASIA ids {', '.join(CASIA_LFW_OVERLAP)} (LFW people)")
    p.add_argument("--chunk-size", type=int, default=256)
    p.add_argument("--wide", action="store_true",
                   help="also store each face on the 160x160 wide canvas (needed by distillation: teacher views)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run("prep", lambda: prep(args))


def prep(args: argparse.Namespace) -> None:
    summary = prepare_from_files(
        args.src, args.dst, exclude_files=args.exclude, casia_exclusions=not args.no_casia_exclusions,
        landmark_file=args.landmarks, compare_landmark_file=args.compare_landmarks, landmark_scale=args.landmark_scale,
        template=args.template, pad=args.pad, workers=args.workers, min_score=args.min_score, policy=args.policy,
        chunk_size=args.chunk_size, wide=args.wide,
    )
    print(json.dumps({k: v for k, v in summary.items() if k != "identities_excluded"}, indent=1))
