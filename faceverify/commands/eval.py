"""faceverify eval lfw|lfw-view1|megaface|ablation: evaluate a model (checkpoint, model directory,
.onnx, a named model or the dlib peer) on the LFW 10-fold protocol, LFW View 1 (with the service's
calibration) or a MegaFace-style identification/verification protocol, or tabulate an ablation.
The runs are ``faceverify.evaluation.run``'s; this module parses and prints. Features are
computed once per image and cached; see docs/evaluation.md."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..detect import DEFAULT_POLICY, SELECTION_POLICIES
from ..dlib_embedder import DETECTORS as DLIB_DETECTORS
from ..embedder import FLIP_MODES
from ..evaluation import run as runs
from ..evaluation.ablation import report_table, write_report
from ..evaluation.features import default_cache_dir
from ..evaluation.report import pct
from ..models import SPEC_HELP, resolve_model
from ..paths import display_command
from . import run


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help=f"{SPEC_HELP}; default: models/default")
    p.add_argument("--flip", default=None, choices=FLIP_MODES,
                   help="flip test-time augmentation: features of the mirrored crop summed or concatenated (SphereFace). "
                        "Default: the model's recorded setting (MODEL.json 'evaluation'), else none")
    p.add_argument("--out", required=True, help="output directory for the JSON/Markdown reports and plots")
    p.add_argument("--cache", default=None,
                   help="feature cache directory (default: $FACEVERIFY_CACHE/features, else ~/.cache/faceverify/features)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu", help="torch device for checkpoints (cpu, cuda)")
    p.add_argument("--policy", default=DEFAULT_POLICY, choices=SELECTION_POLICIES,
                   help="which face to use when the detector finds several")
    # dlib's own loader options (DlibEmbedder's detector, points, upsample): passed only when given
    p.add_argument("--dlib-detector", default=None, choices=DLIB_DETECTORS,
                   help="--model dlib only: HOG (face_recognition's default), MTCNN boxes + dlib landmarks, or MTCNN's "
                        "five points warped onto dlib's chip; hog_mtcnn: HOG, and MTCNN's points only where HOG finds nothing")
    p.add_argument("--dlib-points", type=int, default=None, choices=[5, 68], help="--model dlib only: shape predictor (default 68)")
    p.add_argument("--dlib-upsample", type=int, default=None, help="--model dlib only: HOG pyramid up-sampling (default 1)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="faceverify eval", description=__doc__)
    sub = parser.add_subparsers(dest="protocol", required=True)

    lfw = sub.add_parser("lfw", help="LFW View 2 10-fold verification (SphereFace protocol)")
    _add_model_args(lfw)
    lfw.add_argument("--pairs", help="pairs file in the LFW View 2 format (default: <data>/lfw/pairs.txt)")
    lfw.add_argument("--images", help="image root laid out as Name/Name_NNNN.jpg (default: <data>/lfw/images)")
    lfw.add_argument("--landmarks", help="align from this landmark file (SphereFace lfw_landmark.txt format) instead of MTCNN")
    lfw.add_argument("--landmark-scale", type=float, default=1.0,
                     help="multiply landmark coordinates by this (lfw_landmark.txt on the shared 150x150 LFW: 0.6)")
    lfw.add_argument("--pca", type=float, default=None,
                     help="PCA fitted on the 9 training folds: N >= 1 keeps N dims, 0 < N < 1 keeps that variance fraction")
    lfw.add_argument("--no-center", action="store_true",
                     help="do not centre features on the training folds' mean (SphereFace centres; plain scripts do not)")
    lfw.add_argument("--metric", default=None, choices=["cosine", "euclidean"],
                     help="10-fold pair score: cosine (SphereFace) or minus the Euclidean distance of raw features "
                          "(centring does not change it). Default: the model's native metric — cosine for "
                          "faceverify models, Euclidean for dlib, whose descriptor is defined by Euclidean distance")
    lfw.add_argument("--write-calibration", action="store_true",
                     help="also write the thresholds to calibration.json beside the model, where the service reads them "
                          "(scripts/publish_model.py does this; by default evaluation writes under --out only)")
    lfw.add_argument("--no-calibration", action="store_true", help=argparse.SUPPRESS)  # the old default; kept as a no-op

    v1 = sub.add_parser("lfw-view1", help="LFW View 1, the development view: centring, PCA and threshold from "
                                          "pairsDevTrain.txt, accuracy on pairsDevTest.txt (for choices)")
    _add_model_args(v1)
    v1.add_argument("--images", help="image root laid out as Name/Name_NNNN.jpg (default: <data>/lfw/images)")
    v1.add_argument("--dev-pairs", nargs=2, metavar=("TRAIN", "TEST"),
                    help="the two View 1 pairs files (default: <data>/lfw/pairsDevTrain.txt pairsDevTest.txt)")
    v1.add_argument("--pca", type=float, default=None, help="PCA fitted on pairsDevTrain (as lfw --pca)")
    v1.add_argument("--no-center", action="store_true", help="do not centre features on pairsDevTrain's mean")
    v1.add_argument("--metric", default=None, choices=["cosine", "euclidean"], help="as lfw --metric")
    v1.add_argument("--write-calibration", action="store_true",
                    help="write the service thresholds measured on View 1's images to calibration.json beside the model "
                         "(scripts/publish_model.py does this)")

    ab = sub.add_parser("ablation", help="table (View 1 / View 2 accuracy per run: the loss ablation, or the "
                                         "distillation ablation when the runs distil a teacher) and training curves")
    ab.add_argument("runs", nargs="+", help="run directories of faceverify train, evaluated by scripts/ablation.sh")
    ab.add_argument("--out", required=True, help="output directory for ablation.{json,md} and ablation_curves.png")

    mf = sub.add_parser("megaface", help="MegaFace-style identification (rank-1, CMC) and TAR@FAR with distractors")
    _add_model_args(mf)
    mf.add_argument("--probes", help="probe folder Name/image.jpg; identities with >= 2 images are probes "
                                     "(default: <data>/lfw/images)")
    mf.add_argument("--distractors", help="distractor folder (any layout, searched recursively); default: the identities "
                                          "of the probe folder with exactly one image")
    mf.add_argument("--probe-features", help="precomputed probe features (.npy, (N, D)) instead of --probes images")
    mf.add_argument("--probe-list", help="with --probe-features: N lines 'identity/image' (identity = first path part) "
                                         "or a MegaFace devkit JSON list ({'id': [...], 'path': [...]})")
    mf.add_argument("--distractor-features", help="precomputed distractor features (.npy, (M, D)); may be memory-mapped")
    mf.add_argument("--synthetic-distractors", type=int, default=0,
                    help="use N random unit vectors as distractors: a SPEED test only, labelled so in the report")
    mf.add_argument("--sizes", help="comma-separated distractor set sizes (default 10, 100, 1000, ... all)")
    mf.add_argument("--seed", type=int, default=0, help="seed of the distractor sampling")
    mf.add_argument("--max-rank", type=int, default=10)
    return parser


# dlib's loader options as the flags name them
DLIB_FLAGS = {"dlib_detector": "detector", "dlib_points": "points", "dlib_upsample": "upsample"}


def options(args: argparse.Namespace) -> runs.EvalOptions:
    """The run's options from the flags; settings not given stay None (the model's recorded ones)."""
    return runs.EvalOptions(
        flip=args.flip, pca=getattr(args, "pca", None), center=False if getattr(args, "no_center", False) else None,
        metric=getattr(args, "metric", None), policy=args.policy, batch_size=args.batch_size, device=args.device,
        cache=None if args.no_cache else Path(args.cache) if args.cache else default_cache_dir(),
        embedder={name: getattr(args, flag) for flag, name in DLIB_FLAGS.items() if getattr(args, flag) is not None})


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    command = "faceverify eval " + display_command(argv)
    status = run("eval", lambda: evaluate(args, command))
    if status == 0:
        print(f"reports written to {args.out}")
    return status


def evaluate(args: argparse.Namespace, command: str) -> None:
    if args.protocol == "ablation":
        print(report_table(write_report(args.runs, args.out, command)["runs"]))
    elif args.protocol == "lfw":
        print_lfw(runs.lfw(resolve_model(args.model), options(args), args.out, pairs=args.pairs, images=args.images,
                           landmarks=args.landmarks, landmark_scale=args.landmark_scale,
                           write_calibration=args.write_calibration, command=command))
    elif args.protocol == "lfw-view1":
        d = runs.view1(resolve_model(args.model), options(args), args.out, dev_pairs=args.dev_pairs, images=args.images,
                       write_calibration=args.write_calibration, command=command)
        print(f"LFW View 1: {100 * d['accuracy_devtest']:.2f}% on {d['pairs_devtest']} pairsDevTest pairs "
              f"(threshold {d['threshold']:.4f} from {d['pairs_devtrain']} pairsDevTrain pairs; "
              f"{len(d['skipped_pairs'])} skipped for missing images)")
    else:
        model = None if args.probe_features else resolve_model(args.model)  # features given as files need no model
        print_megaface(runs.megaface(
            model, options(args), args.out, probes=args.probes, distractors=args.distractors,
            probe_features=args.probe_features, probe_list=args.probe_list, distractor_features=args.distractor_features,
            synthetic_distractors=args.synthetic_distractors, sizes=[int(s) for s in args.sizes.split(",")] if args.sizes else None,
            seed=args.seed, max_rank=args.max_rank, command=command, progress=print_progress))


def print_progress(n: int, result) -> None:
    print(f"  {n:>9,} distractors: rank-1 {100 * result.rank1:.2f}%  ({result.search_seconds:.1f} s)", flush=True)


def print_lfw(d: dict) -> None:
    print(f"LFW {d['pairs']} pairs, {d['images']} images, no face: {d['no_face']} (pairs touched: {d['no_face_pairs']}), "
          f"flip {d['flip']}, centre {d['center']}, PCA {d['pca']}, metric {d['metric']}")
    print(f"{'fold':>6} {'accuracy':>9} {'threshold':>10}")
    for i, (a, t) in enumerate(zip(d["folds"], d["fold_thresholds"]), 1):
        print(f"{i:>6} {pct(a):>9} {t:>10.4f}")
    print(f"{'mean':>6} {pct(d['accuracy_mean']):>9}  ± {pct(d['accuracy_std'])}")
    print(f"AUC {d['auc']:.5f}  EER {pct(d['eer'])}  " + "  ".join(f"TAR@FAR={k} {pct(v)}" for k, v in d["tar_at_far"].items()))
    print(f"(optimistic, threshold chosen on all pairs: {pct(d['accuracy_best_threshold_all_pairs_OPTIMISTIC'])})")


def print_megaface(d: dict) -> None:
    if d.get("WARNING"):
        print(d["WARNING"])
    keys = list(d["tar_at_far"])
    print(f"{'distractors':>12} {'rank-1':>8} " + " ".join(f"{'TAR@' + k:>12}" for k in keys))
    for s in d["distractor_sizes"]:
        tar = d["tar_at_far_by_size"][str(s)]
        print(f"{s:>12,} {pct(d['rank1'][str(s)]):>8} " + " ".join(f"{pct(tar[k]['tar']):>12}" for k in keys))
