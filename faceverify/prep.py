"""Folder-per-identity photos (CASIA-WebFace layout: ``root/<identity>/<image>``) -> the packed
aligned set of ``faceverify.packed``. Multiprocess, resumable after a kill (work is cut into fixed
chunks; a chunk is written whole or not at all), with a failure log and a summary."""

from __future__ import annotations

import csv
import hashlib
import json
import multiprocessing as mp
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .align import template_points
from .detect import FaceDetector
from .errors import ConfigError, DataNotFoundError, FaceverifyError, NoFaceError
from .image import IMAGE_SUFFIXES, load_image
from .landmarks import check_landmark_scale, read_landmark_file
from .packed import FORMAT, read_shard_meta, shard_done, write_json_atomic, write_shard
from .face_aligner import FaceAligner

# CASIA-WebFace identities that are LFW people, removed by SphereFace (train/code/get_list.m).
CASIA_LFW_OVERLAP = ("0166921", "1056413", "1193098")


@dataclass
class PrepOptions:
    template: str = "112x96"
    pad: int = 2  # stored margin: 116x100 crops -> random 112x96 crops in training
    min_score: float = 0.95
    policy: str = "largest_central"
    chunk_size: int = 256
    landmarks: dict = field(default_factory=dict)  # relative path -> (5, 2), used instead of MTCNN
    compare_landmarks: dict = field(default_factory=dict)  # relative path -> (5, 2) reference points
    wide: bool = False  # also store the 160x160 "wide160" canvas of each face (for teacher views)

    def fingerprint(self) -> dict:
        return {"template": self.template, "pad": self.pad, "min_score": self.min_score, "policy": self.policy,
                "chunk_size": self.chunk_size, "landmarks": len(self.landmarks), "compare_landmarks": len(self.compare_landmarks),
                "wide": self.wide}


UNLABELLED = ""  # the identity of images that sit directly in a source folder (no identity label)


def scan_identities(sources: list[Path], exclude: set[str]) -> tuple[list[tuple[str, str, str, str]], list[str]]:
    """Work items ``(absolute path, path within its source, identity, recorded path)`` in a fixed
    order, and the excluded identities. With several sources, identities and recorded paths are
    prefixed by the source folder name; landmark files are looked up by the path within the source.
    Images directly inside a source folder are unlabelled faces (identity ``UNLABELLED``)."""
    items, excluded = [], []
    for src in sources:
        if not src.is_dir():
            raise DataNotFoundError(f"source folder {src} does not exist (expected <identity>/<image> folders).")
        prefix = f"{src.name}/" if len(sources) > 1 else ""
        for path in sorted(p for p in src.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
            rel = path.relative_to(src).as_posix()
            items.append((str(path), rel, UNLABELLED, prefix + rel))
        for ident_dir in sorted(p for p in src.iterdir() if p.is_dir()):
            if normalise_name(ident_dir.name) in exclude:
                excluded.append(prefix + ident_dir.name)
                continue
            for path in sorted(ident_dir.rglob("*")):
                if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                    rel = path.relative_to(src).as_posix()
                    items.append((str(path), rel, prefix + ident_dir.name, prefix + rel))
    return items, excluded


def normalise_name(name: str) -> str:
    return name.strip().lower().replace(" ", "_")


def read_exclusion_file(path: str | os.PathLike) -> set[str]:
    """One identity per line; LFW's ``lfw-names.txt`` (name<TAB>count) works as it is."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"exclusion list {path} does not exist.")
    return {normalise_name(line.split("\t")[0]) for line in path.read_text().splitlines() if line.strip()}


# ---- one chunk of work, in a worker process -------------------------------------------------
_worker: dict = {}


def _init_worker(options: PrepOptions, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    _worker["options"] = options
    _worker["aligner"] = FaceAligner(FaceDetector(), options.template, options.pad, options.policy, min_score=options.min_score)
    _worker["wide"] = FaceAligner(_worker["aligner"].detector, "wide160", 0) if options.wide else None


def _process_chunk(args: tuple[int, list[tuple[str, str, str, str]], str]) -> tuple[int, int]:
    index, chunk, dst = args
    options: PrepOptions = _worker["options"]
    aligner: FaceAligner = _worker["aligner"]
    crops, wide, identities, paths, failures, nme, offsets, points, digests = [], [], [], [], [], [], [], [], []
    sources = {"mtcnn": 0, "landmarks": 0}
    for abs_path, rel, identity, recorded in chunk:
        try:
            data = Path(abs_path).read_bytes()
            image = load_image(data)
            aligned = aligner.align(image, options.landmarks.get(rel))
        except NoFaceError as exc:  # faces below min_score are reported as such, not hidden
            best = exc.details.get("best_score")
            reason = f"low_score ({best:.3f} < {options.min_score})" if best is not None else "no_face"
            failures.append([recorded, reason.split(" ")[0], reason])
            continue
        except FaceverifyError as exc:
            failures.append([recorded, exc.code, exc.message])
            continue
        reference = options.compare_landmarks.get(rel)
        if aligned.source == "mtcnn" and reference is not None:
            nme.append(normalised_mean_error(aligned.landmarks, reference))
            offsets.append({"delta": (aligned.landmarks - reference).round(3).tolist(),
                            "inter_ocular": round(float(np.linalg.norm(reference[0] - reference[1])), 3)})
        crops.append(aligned.crop)
        if options.wide:
            wide.append(_worker["wide"].align(image, aligned.landmarks).crop)
        identities.append(identity)
        paths.append(recorded)
        points.append(np.round(aligned.landmarks.astype(np.float64), 2).tolist())
        digests.append(hashlib.sha1(data).hexdigest())  # content key: duplicates and teacher caches
        sources[aligned.source] += 1
    _, (height, width) = template_points(options.template, options.pad)
    pixels = np.stack(crops) if crops else np.zeros((0, height, width, 3), np.uint8)
    extra = {"wide": np.stack(wide) if wide else np.zeros((0, 160, 160, 3), np.uint8)} if options.wide else {}
    write_shard(Path(dst), index, pixels, {"identities": identities, "paths": paths, "landmarks": points, "sha1": digests,
                                          "failures": failures, "nme": nme, "offsets": offsets, "sources": sources}, extra)
    return index, len(chunk)


def normalised_mean_error(points: np.ndarray, reference: np.ndarray) -> float:
    """Mean point-to-point distance divided by the reference inter-ocular (eye-centre) distance."""
    points, reference = np.asarray(points, np.float64), np.asarray(reference, np.float64)
    inter_ocular = np.linalg.norm(reference[0] - reference[1])
    return float(np.linalg.norm(points - reference, axis=1).mean() / inter_ocular)


# ---- the driver ---------------------------------------------------------------------------
def prepare_dataset(
    src: str | os.PathLike | list,
    dst: str | os.PathLike,
    template: str = "112x96",
    pad: int = 2,
    workers: int = 1,
    landmarks: dict | None = None,
    compare_landmarks: dict | None = None,
    exclude: set[str] | None = None,
    min_score: float = 0.95,
    policy: str = "largest_central",
    chunk_size: int = 256,
    progress: bool = True,
    wide: bool = False,
) -> dict:
    """Prepare (or finish preparing) ``dst`` from one or more identity folders; returns the summary.

    Re-running on the same ``dst`` skips finished chunks; a ``dst`` made from other sources or
    options is refused rather than mixed.
    """
    sources = [Path(s) for s in (src if isinstance(src, (list, tuple)) else [src])]
    dst = Path(dst)
    exclude = {normalise_name(n) for n in (exclude if exclude is not None else CASIA_LFW_OVERLAP)}
    options = PrepOptions(template, pad, min_score, policy, chunk_size, landmarks or {}, compare_landmarks or {}, wide)
    template_points(template)  # validates the name before any work
    items, excluded = scan_identities(sources, exclude)
    if not items:
        raise DataNotFoundError(f"no images found under {', '.join(map(str, sources))} (expected <identity>/<image> files).")
    plan = {
        "format": FORMAT,
        "sources": [str(s.resolve()) for s in sources],
        "items_sha256": hashlib.sha256("\n".join(recorded + "\t" + ident for _, _, ident, recorded in items).encode()).hexdigest(),
        "options": options.fingerprint(),
    }
    dst.mkdir(parents=True, exist_ok=True)
    plan_path = dst / "plan.json"
    if plan_path.is_file():
        previous = json.loads(plan_path.read_text())
        if previous != plan:
            raise ConfigError(
                f"{dst} holds a preparation of other sources or options ({plan_path}); "
                "choose a new destination or delete it to start over."
            )
    else:
        write_json_atomic(plan_path, plan)

    chunks = [items[i : i + chunk_size] for i in range(0, len(items), chunk_size)]
    todo = [(k, chunk, str(dst)) for k, chunk in enumerate(chunks) if not shard_done(dst, k)]
    done_images = sum(len(c) for k, c in enumerate(chunks) if shard_done(dst, k))
    bar = tqdm(total=len(items), initial=done_images, unit="img", desc=f"prep {dst.name}", disable=not progress, smoothing=0.05)
    start = time.perf_counter()
    processed = 0
    if todo:
        workers = max(1, int(workers))
        threads = max(1, (os.cpu_count() or 1) // workers)
        if workers == 1:
            _init_worker(options, threads)
            results = map(_process_chunk, todo)
            for _, n in results:
                processed += n
                bar.update(n)
        else:
            ctx = mp.get_context("spawn")  # fork + torch threads can deadlock
            with ctx.Pool(workers, initializer=_init_worker, initargs=(options, threads)) as pool:
                for _, n in pool.imap_unordered(_process_chunk, todo):
                    processed += n
                    bar.update(n)
    bar.close()
    elapsed = time.perf_counter() - start
    return finalize(dst, len(chunks), options, excluded, processed, elapsed, workers)


def prepare_from_files(src: str | os.PathLike | list, dst: str | os.PathLike, exclude_files: list = (),
                       casia_exclusions: bool = True, landmark_file: str | None = None,
                       compare_landmark_file: str | None = None, landmark_scale: float = 1.0, **options) -> dict:
    """``prepare_dataset`` with its exclusions and landmark tables read from files (``faceverify prep``).
    A landmark table is checked on a few photos of each source first, so that a wrong
    ``landmark_scale`` fails in seconds rather than after hours of work."""
    exclude = set(CASIA_LFW_OVERLAP) if casia_exclusions else set()
    for path in exclude_files:
        exclude |= read_exclusion_file(path)
    landmarks, compare = (read_landmark_file(f, landmark_scale) if f else None for f in (landmark_file, compare_landmark_file))
    for table in (landmarks, compare):
        if table:
            for source in (src if isinstance(src, (list, tuple)) else [src]):
                check_landmark_scale(table, source, FaceDetector(), landmark_scale)
    return prepare_dataset(src, dst, landmarks=landmarks, compare_landmarks=compare, exclude=exclude, **options)


def finalize(dst: Path, n_chunks: int, options: PrepOptions, excluded: list[str], processed: int, elapsed: float, workers: int) -> dict:
    """Write manifest.json, failures.csv and summary.json from the finished shards."""
    identities_seen: dict[str, int] = {}
    failures, nme, offsets = [], [], []
    sources = {"mtcnn": 0, "landmarks": 0}
    kept_shards = []
    for k in range(n_chunks):
        meta = read_shard_meta(dst, k)
        for name in meta["identities"]:
            identities_seen[name] = identities_seen.get(name, 0) + 1
        failures.extend(meta["failures"])
        nme.extend(meta["nme"])
        offsets.extend(meta.get("offsets", []))
        for key, n in meta["sources"].items():
            sources[key] = sources.get(key, 0) + n
        if meta["identities"]:
            kept_shards.append(k)
    unlabelled = identities_seen.pop(UNLABELLED, 0)
    classes = sorted(identities_seen)
    _, (height, width) = template_points(options.template, options.pad)
    write_json_atomic(dst / "manifest.json", {
        "format": FORMAT, "template": options.template, "pad": options.pad, "crop_size": [height, width],
        "classes": classes, "shards": kept_shards, "wide": options.wide,
        "sources": {s.name: str(s) for s in map(Path, json.loads((dst / "plan.json").read_text())["sources"])},
    })
    tmp = dst / f"failures.csv.{os.getpid()}.tmp"  # per process: two runs may finalise one cached set
    with tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "reason", "detail"])
        writer.writerows(failures)
    os.replace(tmp, dst / "failures.csv")
    kept = sum(identities_seen.values()) + unlabelled
    reasons: dict[str, int] = {}
    for _, reason, _ in failures:
        reasons[reason] = reasons.get(reason, 0) + 1
    summary = {
        "identities": len(classes),
        "images_unlabelled": unlabelled,
        "identities_excluded": excluded,
        "images_total": kept + len(failures),
        "images_kept": kept,
        "images_failed": len(failures),
        "failures_by_reason": reasons,
        "alignment_sources": sources,
        "images_processed_this_run": processed,
        "elapsed_s": round(elapsed, 2),
        "images_per_s": round(processed / elapsed, 2) if processed and elapsed > 0 else None,
        "workers": workers,
        "template": options.template,
        "pad": options.pad,
        "crop_size": [height, width],
        "min_score": options.min_score,
        "policy": options.policy,
    }
    if nme:
        values = np.asarray(nme)
        summary["landmark_nme"] = round(float(values.mean()), 5)
        summary["landmark_nme_median"] = round(float(np.median(values)), 5)
        summary["landmark_nme_over_0.1"] = int((values > 0.1).sum())
        summary["landmark_nme_images"] = int(values.size)
    if offsets:
        # A systematic offset (a coordinate convention, or another MTCNN) is not noise: report it
        # per point, and the NME that remains once it is removed.
        deltas = np.asarray([o["delta"] for o in offsets])  # (n, 5, 2) MTCNN minus reference, px
        inter_ocular = np.asarray([o["inter_ocular"] for o in offsets])
        mean_offset = deltas.mean(0)
        summary["landmark_mean_offset_px"] = mean_offset.round(3).tolist()
        residual = np.linalg.norm(deltas - mean_offset, axis=2).mean(1) / inter_ocular
        summary["landmark_nme_offset_removed"] = round(float(residual.mean()), 5)
    write_json_atomic(dst / "summary.json", summary)
    return summary
