"""faceverify eval lfw|megaface: evaluate a model (checkpoint, model directory, .onnx, or the dlib
peer) on the LFW 10-fold protocol or a MegaFace-style identification/verification protocol.
Features are computed once per image and cached; see docs/evaluation.md."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from faceverify.errors import ConfigError, DataNotFoundError, FaceverifyError, exit_status
from faceverify.models import resolve_model
from faceverify.paths import display_command, display_path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".pgm", ".ppm", ".bmp", ".webp"}


# --------------------------------------------------------------------------- arguments
def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None,
                   help="checkpoint (.pt), model directory (with model.pt), .onnx file, or 'dlib' (optional peer, "
                        "bench/peers/install.sh); default: models/default")
    p.add_argument("--flip", default=None, choices=["none", "sum", "concat"],
                   help="flip test-time augmentation: features of the mirrored crop summed or concatenated (SphereFace). "
                        "Default: the model's recorded setting (MODEL.json 'evaluation'), else none")
    p.add_argument("--out", required=True, help="output directory for the JSON/Markdown reports and plots")
    p.add_argument("--cache", default=None,
                   help="feature cache directory (default: $FACEVERIFY_CACHE or ~/.cache/faceverify/features)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu", help="torch device for checkpoints (cpu, cuda)")
    p.add_argument("--policy", default="largest_central", choices=["largest_central", "largest", "central", "highest_score"],
                   help="which face to use when the detector finds several")
    p.add_argument("--dlib-detector", default="hog", choices=["hog", "hog_mtcnn", "mtcnn", "mtcnn_points"],
                   help="--model dlib only: HOG (face_recognition's default), MTCNN boxes + dlib landmarks, or MTCNN's "
                        "five points warped onto dlib's chip; hog_mtcnn: HOG, and MTCNN's points only where HOG finds nothing")
    p.add_argument("--dlib-points", type=int, default=68, choices=[5, 68], help="--model dlib only: shape predictor")
    p.add_argument("--dlib-upsample", type=int, default=1, help="--model dlib only: HOG pyramid up-sampling")


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


# --------------------------------------------------------------------------- model / features
def recorded_settings(spec: str) -> dict:
    """The evaluation settings a published model records (``MODEL.json`` -> ``evaluation``). None
    for dlib: its card records how it is served (MTCNN's points, cosine), while evaluating dlib
    defaults to face_recognition's own pipeline (HOG, Euclidean)."""
    if spec == "dlib":
        return {}
    return dict(resolve_model(spec).manifest().get("evaluation") or {})


def apply_recorded_settings(args, spec: str) -> None:
    """Flags the user did not give take the model's recorded values (then the plain defaults)."""
    recorded = recorded_settings(spec)
    if args.flip is None:
        args.flip = recorded.get("flip", "none")
    if hasattr(args, "pca") and args.pca is None and recorded.get("pca") is not None:
        args.pca = recorded["pca"]
    if hasattr(args, "no_center") and not args.no_center and recorded.get("center") is False:
        args.no_center = True  # chosen on View 1: centring costs a narrow-cone (teacher-geometry) model accuracy
    if hasattr(args, "metric") and args.metric is None:  # a descriptor's metric is part of the model, not a knob
        args.metric = recorded.get("metric") or ("euclidean" if spec == "dlib" else "cosine")


def make_embedder(args, spec: str, fallback: str = "center_crop"):
    from faceverify.loaders import load_embedder

    # the embedder always returns mirrored-crop features when a flip mode is asked for; the
    # evaluation combines them (so one cache serves none/sum/concat)
    flip = "none" if args.flip == "none" else "sum"
    if spec == "dlib":
        return load_embedder("dlib", flip=flip, detector=args.dlib_detector, points=args.dlib_points,
                             upsample=args.dlib_upsample, policy=args.policy, fallback=fallback)
    return load_embedder(spec, flip=flip, batch_size=args.batch_size, fallback=fallback, policy=args.policy, device=args.device)


def feature_config(embedder, spec: str, alignment: dict, root: Path) -> dict:
    from faceverify.evaluation.features import file_digest

    if spec == "dlib":
        model = dict(embedder.config)
    else:
        model = {"embedder": type(embedder).__name__, "model_sha1": file_digest(resolve_model(spec).weights),
                 "template": embedder.aligner.template, "policy": embedder.aligner.policy,
                 "fallback": embedder.aligner.fallback}
    return {"model": model, "alignment": alignment, "images": str(root.resolve())}


def cache_dir(args) -> Path | None:
    if args.no_cache:
        return None
    if args.cache:
        return Path(args.cache)
    env = os.environ.get("FACEVERIFY_CACHE")
    return Path(env) / "features" if env else Path.home() / ".cache" / "faceverify" / "features"


def features_for(args, spec: str, root: Path, paths: list[str], landmarks=None, alignment=None):
    from faceverify.evaluation.features import cache_key, compute_features

    embedder = make_embedder(args, spec)
    directory = cache_dir(args)
    detections = None
    if directory and landmarks is None and embedder.aligner is not None:
        # MTCNN results depend on the pixels only: one detection cache serves every model
        from faceverify.detect import CachedDetector
        from faceverify.pipeline import FaceAligner

        a = embedder.aligner
        detections = CachedDetector(directory / "detections")
        embedder.aligner = FaceAligner(detections, template=a.template, pad=a.pad, policy=a.policy, fallback=a.fallback)
    # the cache key names how crops are found: the embedder's own detector (its config says which)
    # or a landmark file; LFW and MegaFace runs of one model share the cache
    key_alignment = alignment if landmarks is not None else {"source": "detector"}
    config = feature_config(embedder, spec, key_alignment, root)
    cache_file = directory / f"{cache_key(config)}.npz" if directory else None
    t0 = time.perf_counter()
    feats = compute_features(embedder, root, paths, cache_file=cache_file, config=config, landmarks=landmarks,
                             batch_size=args.batch_size, need_flipped=args.flip != "none")
    if detections is not None:
        detections.save()
    return feats, {"cache_file": str(cache_file) if cache_file else None, "seconds": time.perf_counter() - t0,
                   "embedder": getattr(embedder, "name", spec)}


# --------------------------------------------------------------------------- LFW
def _image_root(images: str | None, first: str) -> Path:
    from faceverify.paths import lfw_root

    root = Path(images) if images else lfw_root() / "images"
    if not root.is_dir():
        raise DataNotFoundError(f"image root {root} does not exist.")
    if not (root / first).is_file() and (root / "images" / first).is_file():
        root = root / "images"  # accept the LFW folder itself (which holds images/)
    if not (root / first).is_file():
        raise DataNotFoundError(f"{root / first} does not exist: --images must be laid out as Name/Name_NNNN.jpg.")
    return root


def run_lfw(args, command: str) -> dict:
    from faceverify.evaluation import lfw, report
    from faceverify.landmarks import check_landmarks_fit, read_landmark_file
    from faceverify.image import load_image
    from faceverify.paths import lfw_root

    spec = str(resolve_model(args.model))  # "dlib" or a path
    apply_recorded_settings(args, spec)
    pairs_file = Path(args.pairs) if args.pairs else lfw_root() / "pairs.txt"
    pairs = lfw.read_pairs(pairs_file)
    images = pairs.images()
    root = _image_root(args.images, images[0])
    missing = [p for p in images if not (root / p).is_file()]
    if missing:
        raise DataNotFoundError(f"{len(missing)} images of the pairs are missing under {root}, e.g. {missing[0]}; "
                                "no pair may be dropped, so fix the image root.")
    landmarks, alignment = None, {"source": "mtcnn", "fallback": "center_crop"}
    if args.landmarks:
        if spec == "dlib":
            raise ConfigError("--landmarks does not apply to --model dlib (dlib finds its own landmarks).")
        table = read_landmark_file(args.landmarks, args.landmark_scale)
        absent = [p for p in images if p not in table]
        if absent:
            raise ConfigError(f"{args.landmarks} has no landmarks for {len(absent)} images of the pairs, e.g. {absent[0]}.")
        # one cheap check against a wrong --landmark-scale before any work
        check_landmarks_fit(table[images[0]], load_image(root / images[0]).shape, images[0], args.landmark_scale)
        landmarks = {p: table[p] for p in images}
        from faceverify.evaluation.features import file_digest

        alignment = {"source": "landmarks", "file": display_path(args.landmarks), "sha1": file_digest(args.landmarks),
                     "scale": args.landmark_scale}
    if spec == "dlib":
        alignment = {"source": f"dlib {args.dlib_detector}", "points": args.dlib_points, "fallback": "center_crop"}
    feats, info = features_for(args, spec, root, images, landmarks, alignment)
    left = feats.vectors(pairs.left, args.flip)
    right = feats.vectors(pairs.right, args.flip)
    protocol = lfw.ten_fold(left, right, pairs.same, pairs.folds, center=not args.no_center, pca=args.pca,
                            metric=args.metric)
    plain = lfw.cosine_scores(left, right)
    no_face_imgs = {p for p, s in zip(feats.paths, feats.sources) if s == "center_crop"}
    rep = lfw.LfwReport(protocol=protocol, plain_scores=plain, same=pairs.same, flip=args.flip,
                        no_face=len(no_face_imgs), images=len(images), alignment=alignment)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    d = rep.to_dict()
    no_face_pairs = sum(1 for a, b in zip(pairs.left, pairs.right) if a in no_face_imgs or b in no_face_imgs)
    d.update(model=display_path(spec) if spec != "dlib" else spec, pairs_file=display_path(pairs_file),
             images_root=display_path(root), no_face_pairs=no_face_pairs,
             alignment_sources=feats.source_counts(), no_face_images=sorted(no_face_imgs),
             embedder=info["embedder"], feature_seconds=info["seconds"],
             cache_file=Path(info["cache_file"]).name if info["cache_file"] else None, command=command)
    d["misclassified_pairs"] = misclassified(pairs, protocol, no_face_imgs)
    from faceverify.evaluation import metrics

    calibration = calibrate(feats, args.flip, metrics.best_threshold(plain, pairs.same),
                            f"faceverify eval lfw on {pairs_file.name} ({d['pairs']} pairs), alignment {alignment['source']}",
                            Path(str(spec)).name)
    d["calibration"] = calibration
    report.write_json(out / "calibration.json", calibration)
    d["calibration_file"] = "calibration.json"  # beside lfw.json; the service's comes from View 1
    if args.write_calibration:
        place_calibration(args, spec, calibration)
    report.write_json(out / "lfw.json", d)
    (out / "lfw.md").write_text(report.lfw_markdown(d, command))
    report.plot_roc(out / "lfw_roc.png", {f"{Path(str(spec)).name} (AUC {rep.auc:.4f})": (rep.roc.far, rep.roc.tar)},
                    "LFW ROC (all pairs, plain cosine)")
    report.plot_histogram(out / "lfw_scores.png", plain[pairs.same], plain[~pairs.same], "LFW pair scores",
                          {"best acc": calibration["thresholds"]["best_accuracy"],
                           "FAR 1e-3": calibration["thresholds"]["far_1e-3"]})
    return d


CALIBRATION_FARS = (1e-2, 1e-3, 1e-4)


def calibrate(feats, flip: str, best_accuracy: float, source: str, model: str) -> dict:
    """Service thresholds on the score it computes (cosine of the flip-combined features, no
    centring): FAR 1e-2 / 1e-3 / 1e-4 from *every* different-identity pair of the evaluated images
    (identity = folder name), and the best-accuracy threshold of the listed pairs."""
    from faceverify.evaluation import lfw

    paths = list(dict.fromkeys(feats.paths))
    wide = lfw.all_pairs_tar_at_far(feats.vectors(paths, flip), [p.split("/")[0] for p in paths], fars=CALIBRATION_FARS)
    thresholds = {f"far_{float(k):.0e}".replace("e-0", "e-"): at.threshold for k, at in wide["tar_at_far"].items()}
    return {
        "metric": "cosine", "flip": flip, "model": model, "source": source,
        "thresholds": {**thresholds, "best_accuracy": best_accuracy},
        "genuine_pairs": wide["genuine_pairs"], "impostor_pairs": wide["impostor_pairs"],
        "tar_at_far": {f"{float(k):.0e}".replace("e-0", "e-"): at.tar for k, at in wide["tar_at_far"].items()},
        "note": (f"accept when cosine > threshold; far_* thresholds: empirical impostor quantiles over all "
                 f"{wide['impostor_pairs']} different-identity pairs of the {len(paths)} images; best_accuracy: "
                 "the best-accuracy threshold of the listed development pairs"),
    }


DEFAULT_POINT_TOLERANCE = 0.01  # a default may cost at most 1 point of DevTest accuracy against the best threshold


def default_operating_point(accuracy_at: dict[str, float], best: float) -> str:
    """The strictest FAR operating point whose View 1 DevTest accuracy is within
    DEFAULT_POINT_TOLERANCE of the best threshold's (else the most accurate one): what the service
    uses when a request names none."""
    fars = sorted((p for p in accuracy_at if p.startswith("far_")), key=lambda p: float(p[4:]))  # strictest first
    for point in fars:
        if accuracy_at[point] >= best - DEFAULT_POINT_TOLERANCE:
            return point
    return max(fars, key=lambda p: accuracy_at[p])


def place_calibration(args, spec: str, calibration: dict) -> None:
    """``--write-calibration``: beside the model, where ``faceverify serve``/``verify`` read it."""
    from faceverify.evaluation import report

    if spec == "dlib" and args.dlib_detector != "mtcnn_points":
        raise ConfigError("the service serves dlib on MTCNN's five points: calibrate it with --dlib-detector mtcnn_points.")
    target = resolve_model(spec).calibration_file
    target.parent.mkdir(parents=True, exist_ok=True)
    report.write_json(target, calibration)


def run_view1(args, command: str) -> dict:
    """LFW View 1 as the LFW readme defines it: develop on pairsDevTrain, measure on pairsDevTest.
    Pairs whose images are missing (the shared copy lacks Betsy_Coffin_0001) are skipped and listed."""
    from faceverify.evaluation import lfw, report
    from faceverify.paths import lfw_root

    spec = str(resolve_model(args.model))  # "dlib" or a path
    apply_recorded_settings(args, spec)
    files = args.dev_pairs or [lfw_root() / "pairsDevTrain.txt", lfw_root() / "pairsDevTest.txt"]
    views = [lfw.read_pairs(f) for f in files]
    root = _image_root(args.images, views[0].left[0])
    left, right, same, fold, skipped = [], [], [], [], []
    for k, pairs in enumerate(views):
        for a, b, s in zip(pairs.left, pairs.right, pairs.same):
            if not ((root / a).is_file() and (root / b).is_file()):
                skipped.append(f"{Path(pairs.source).name}: {a} {b}")
                continue
            left.append(a), right.append(b), same.append(s), fold.append(k)
    same, fold = np.array(same), np.array(fold)
    alignment = {"source": "mtcnn", "fallback": "center_crop"}
    if spec == "dlib":
        alignment = {"source": f"dlib {args.dlib_detector}", "points": args.dlib_points, "fallback": "center_crop"}
    feats, info = features_for(args, spec, root, list(dict.fromkeys(left + right)), None, alignment)
    # two "folds": DevTrain supplies mu, PCA and the threshold for DevTest (fold 2 of ten_fold)
    left_vectors, right_vectors = feats.vectors(left, args.flip), feats.vectors(right, args.flip)
    protocol = lfw.ten_fold(left_vectors, right_vectors, same, fold, center=not args.no_center, pca=args.pca,
                            metric=args.metric)
    plain = lfw.cosine_scores(left_vectors, right_vectors)  # the service's score: no centring
    test = protocol.folds[1]
    d = {"view": 1, "model": display_path(spec) if spec != "dlib" else spec, "accuracy_devtest": test.accuracy, "threshold": test.threshold,
         "pairs_devtrain": int((fold == 0).sum()), "pairs_devtest": int((fold == 1).sum()), "skipped_pairs": skipped,
         "flip": args.flip, "center": not args.no_center, "pca": args.pca, "metric": args.metric,
         "alignment": alignment, "alignment_sources": feats.source_counts(), "feature_seconds": info["seconds"],
         "command": command}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from faceverify.evaluation import metrics

    calibration = calibrate(feats, args.flip, metrics.best_threshold(plain[fold == 0], same[fold == 0]),
                            f"faceverify eval lfw-view1 (LFW View 1 images: pairsDevTrain + pairsDevTest), alignment "
                            f"{alignment['source']}", Path(str(spec)).name)
    # each operating point's accuracy on pairsDevTest with the service's score: the default
    # operating point is chosen here, on View 1, never on the test view
    test_plain, test_same = plain[fold == 1], same[fold == 1]
    d["devtest_accuracy_at"] = {point: metrics.accuracy(test_plain, test_same, t) for point, t in calibration["thresholds"].items()}
    d["devtest_best_accuracy"] = metrics.optimistic_accuracy(test_plain, test_same)[0]  # best threshold on DevTest itself
    calibration["default_operating_point"] = default_operating_point(d["devtest_accuracy_at"], d["devtest_best_accuracy"])
    d["calibration"] = calibration
    report.write_json(out / "calibration.json", calibration)
    if args.write_calibration:
        place_calibration(args, spec, calibration)
    report.write_json(out / "view1.json", d)
    (out / "view1.md").write_text(
        f"# LFW View 1 (development)\n\n`{command}`\n\nAccuracy on pairsDevTest ({d['pairs_devtest']} pairs, "
        f"threshold {test.threshold:.4f} from {d['pairs_devtrain']} pairsDevTrain pairs): "
        f"**{100 * test.accuracy:.2f}%**. Skipped (missing images): {len(skipped)}.\n")
    return d


def misclassified(pairs, protocol, no_face_imgs: set, limit: int = 1000) -> dict:
    """The pairs the 10-fold protocol got wrong (score vs its fold's threshold; strict, as
    ``metrics.accuracy``), with whether a no-face (centre-crop) image is involved."""
    thr = np.array([f.threshold for f in protocol.folds])[pairs.folds]
    wrong = np.flatnonzero(np.where(pairs.same, protocol.scores <= thr, protocol.scores >= thr))
    rows = [{"pair": int(i) + 1, "fold": int(pairs.folds[i]) + 1, "same": bool(pairs.same[i]),
             "left": pairs.left[i], "right": pairs.right[i], "score": float(protocol.scores[i]),
             "threshold": float(thr[i]), "no_face": pairs.left[i] in no_face_imgs or pairs.right[i] in no_face_imgs}
            for i in wrong[:limit]]
    return {"count": int(wrong.size), "false_rejects": int(pairs.same[wrong].sum()),
            "false_accepts": int((~pairs.same[wrong]).sum()),
            "with_no_face_image": int(sum(pairs.left[i] in no_face_imgs or pairs.right[i] in no_face_imgs for i in wrong)),
            "pairs": rows, "truncated": bool(wrong.size > limit)}


def print_lfw(d: dict) -> None:
    from faceverify.evaluation.report import pct

    print(f"LFW {d['pairs']} pairs, {d['images']} images, no face: {d['no_face']} (pairs touched: {d['no_face_pairs']}), "
          f"flip {d['flip']}, centre {d['center']}, PCA {d['pca']}, metric {d['metric']}")
    print(f"{'fold':>6} {'accuracy':>9} {'threshold':>10}")
    for i, (a, t) in enumerate(zip(d["folds"], d["fold_thresholds"]), 1):
        print(f"{i:>6} {pct(a):>9} {t:>10.4f}")
    print(f"{'mean':>6} {pct(d['accuracy_mean']):>9}  ± {pct(d['accuracy_std'])}")
    print(f"AUC {d['auc']:.5f}  EER {pct(d['eer'])}  " + "  ".join(f"TAR@FAR={k} {pct(v)}" for k, v in d["tar_at_far"].items()))
    print(f"(optimistic, threshold chosen on all pairs: {pct(d['accuracy_best_threshold_all_pairs_OPTIMISTIC'])})")


# --------------------------------------------------------------------------- MegaFace
def scan_folder(root: Path) -> list[str]:
    """Relative paths of every image below ``root``, sorted."""
    if not root.is_dir():
        raise DataNotFoundError(f"folder {root} does not exist.")
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def read_feature_list(path: str | Path, n: int) -> list[str]:
    """Row names of a feature file: a text file with one 'identity/image' per line, or a MegaFace
    devkit JSON list ({"id": [...], "path": [...]}; identity taken from "id")."""
    import json

    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"feature list {path} does not exist.")
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        if not {"id", "path"} <= set(data):
            raise ConfigError(f"{path}: a JSON list needs 'id' and 'path' arrays (MegaFace devkit format).")
        names = [f"{i}/{Path(p).name}" for i, p in zip(data["id"], data["path"])]
    else:
        names = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    if len(names) != n:
        raise ConfigError(f"{path} lists {len(names)} images but the feature file has {n} rows.")
    return names


def load_features_npy(path: str | Path) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"feature file {path} does not exist.")
    arr = np.load(path, mmap_mode="r")
    if arr.ndim != 2:
        raise ConfigError(f"{path}: expected an (N, D) feature matrix, got shape {arr.shape}.")
    return arr


def run_megaface(args, command: str) -> dict:
    from faceverify.evaluation import megaface, report
    from faceverify.paths import lfw_root

    spec = None
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else None
    info = {}
    if args.probe_features:
        if not args.probe_list:
            raise ConfigError("--probe-features needs --probe-list (one 'identity/image' line per row).")
        args.flip = args.flip or "none"  # features given as files are used as they are
        probe_feats = np.asarray(load_features_npy(args.probe_features), dtype=np.float32)
        probe_names = read_feature_list(args.probe_list, probe_feats.shape[0])
        model_label = f"features:{args.probe_features}"
    else:
        spec = str(resolve_model(args.model))  # "dlib" or a path
        apply_recorded_settings(args, spec)
        probe_root = Path(args.probes) if args.probes else lfw_root() / "images"
        probe_names = scan_folder(probe_root)
        if not probe_names:
            raise DataNotFoundError(f"no images under {probe_root}.")
        model_label = spec
    identities = np.array([Path(p).parts[0] if len(Path(p).parts) > 1 else "" for p in probe_names])
    ids, counts = np.unique(identities, return_counts=True)
    count_of = dict(zip(ids, counts))
    multi = np.array([count_of[i] >= 2 and i != "" for i in identities])
    distractor_names: list[str] = []
    distractor_root = None
    if args.synthetic_distractors:
        pass
    elif args.distractor_features:
        pass
    elif args.distractors:
        distractor_root = Path(args.distractors)
        distractor_names = scan_folder(distractor_root)
    elif not args.probe_features:
        distractor_root = probe_root
        distractor_names = [p for p, m in zip(probe_names, multi) if not m]
    else:
        raise ConfigError("give distractors: --distractor-features, --distractors DIR or --synthetic-distractors N.")
    if args.probe_features:
        probes = probe_feats[multi]
    else:
        wanted = [p for p, m in zip(probe_names, multi) if m]
        if distractor_root == probe_root:
            feats, info = features_for(args, spec, probe_root, wanted + distractor_names)
            probes = feats.vectors(wanted, args.flip)
            distractors = feats.vectors(distractor_names, args.flip)
        else:
            feats, info = features_for(args, spec, probe_root, wanted)
            probes = feats.vectors(wanted, args.flip)
            if distractor_root is not None:
                dfeats, _ = features_for(args, spec, distractor_root, distractor_names)
                distractors = dfeats.vectors(distractor_names, args.flip)
    probe_ids = identities[multi]
    if args.synthetic_distractors:
        distractors = megaface.synthetic_unit_vectors(args.synthetic_distractors, probes.shape[1], seed=args.seed + 1)
    elif args.distractor_features:
        distractors = load_features_npy(args.distractor_features)
    if len(distractors) == 0:
        raise ConfigError("the distractor set is empty.")

    def progress(n, res):
        print(f"  {n:>9,} distractors: rank-1 {100 * res.rank1:.2f}%  ({res.search_seconds:.1f} s)", flush=True)

    result = megaface.evaluate(probes, probe_ids, np.asarray(distractors, dtype=np.float32), sizes=sizes, seed=args.seed,
                               max_rank=args.max_rank, synthetic=bool(args.synthetic_distractors), progress=progress)
    d = result.to_dict()
    d.update(model=model_label, flip=args.flip, command=command, embedder=info.get("embedder"),
             feature_seconds=info.get("seconds"), cache_file=info.get("cache_file"))
    if not args.probe_features and not args.synthetic_distractors:
        d["alignment_sources"] = feats.source_counts()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report.write_json(out / "megaface.json", d)
    (out / "megaface.md").write_text(report.megaface_markdown(d, command))
    report.plot_cmc(out / "megaface_cmc.png", {f"{s.distractors:,}": s.cmc for s in result.sizes},
                    "MegaFace-style CMC" + (" (SYNTHETIC distractors: speed only)" if args.synthetic_distractors else ""))
    impostor = megaface.random_impostor_scores(probes, np.asarray(distractors, dtype=np.float32), seed=args.seed)
    report.plot_histogram(out / "megaface_scores.png", result.genuine_scores, impostor, "probe-gallery vs probe-distractor scores",
                          {f"FAR {k}": v.threshold for k, v in result.sizes[-1].tar.items()}, impostor_label="probe-distractor (random sample)")
    return d


def print_megaface(d: dict) -> None:
    from faceverify.evaluation.report import pct

    if d.get("WARNING"):
        print(d["WARNING"])
    keys = list(d["tar_at_far"])
    print(f"{'distractors':>12} {'rank-1':>8} " + " ".join(f"{'TAR@' + k:>12}" for k in keys))
    for s in d["distractor_sizes"]:
        tar = d["tar_at_far_by_size"][str(s)]
        print(f"{s:>12,} {pct(d['rank1'][str(s)]):>8} " + " ".join(f"{pct(tar[k]['tar']):>12}" for k in keys))


# --------------------------------------------------------------------------- entry point
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    command = "faceverify eval " + display_command(argv)
    try:
        if args.protocol == "lfw":
            print_lfw(run_lfw(args, command))
        elif args.protocol == "ablation":
            from faceverify.evaluation.ablation import report_table, write_report

            print(report_table(write_report(args.runs, args.out, command)["runs"]))
        elif args.protocol == "lfw-view1":
            d = run_view1(args, command)
            print(f"LFW View 1: {100 * d['accuracy_devtest']:.2f}% on {d['pairs_devtest']} pairsDevTest pairs "
                  f"(threshold {d['threshold']:.4f} from {d['pairs_devtrain']} pairsDevTrain pairs; "
                  f"{len(d['skipped_pairs'])} skipped for missing images)")
        else:
            print_megaface(run_megaface(args, command))
    except FaceverifyError as exc:
        print(f"faceverify eval: {exc.message}", file=sys.stderr)
        return exit_status(exc)
    print(f"reports written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
