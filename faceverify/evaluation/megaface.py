"""MegaFace-style identification and verification (MegaFace challenge 1 protocol, FaceScrub logic
as coded in FaceX-Zoo ``test_protocol/megaface/megaface_evaluator.py``), searched with FAISS.

- Probe set: identities with >= 2 images. For an identity with M images, each image in turn is the
  gallery entry and the other M - 1 are probes: M (M - 1) searches per identity.
- Gallery of one search: that one image plus the distractor set (faces of other people). The rank of
  a search is 1 + the number of distractors scoring strictly higher than the gallery image.
- Distractor sets of 10, 100, 1000, ... up to all available, nested, sampled with a fixed seed.
- Verification: genuine = the probe-gallery pairs above, impostor = every probe image x every
  distractor; TAR at FAR 1e-6 / 1e-5 / 1e-4.

Nothing forms the probe x distractor matrix: FAISS inner-product search on L2-normalised vectors
returns each probe's top-k distractor scores; k grows only for the probes that need it (see
``_top_impostors``), so 1M distractors fit in memory.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataNotFoundError
from ..image import IMAGE_SUFFIXES
from . import metrics

DEFAULT_FARS = (1e-6, 1e-5, 1e-4)


def distractor_sizes(available: int, sizes: list[int] | None = None) -> list[int]:
    """10, 100, 1000, ... below ``available``, then ``available`` itself (MegaFace devkit default:
    10 ... 1,000,000)."""
    if sizes:
        bad = [s for s in sizes if s < 1 or s > available]
        if bad:
            raise ConfigError(f"distractor sizes {bad} are outside 1..{available} (the distractors available)")
        return sorted(set(int(s) for s in sizes))
    out, n = [], 10
    while n < available:
        out.append(n)
        n *= 10
    return out + [available]


def normalise_rows(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    if (norm == 0).any():
        raise ValueError(f"{int((norm == 0).sum())} feature vectors are all zeros")
    return x / norm


@dataclass
class GenuinePairs:
    """All ordered (probe, gallery) pairs of the same identity, probe != gallery."""

    probe: np.ndarray  # (G,) int64 row of the probe image
    gallery: np.ndarray  # (G,) int64 row of the gallery image
    scores: np.ndarray  # (G,) float32 cosine


def genuine_pairs(probes: np.ndarray, identities: np.ndarray) -> GenuinePairs:
    """Probe-gallery pairs of identities with >= 2 images (FaceX-Zoo: each image in turn is the
    gallery, the others probes). ``probes`` must be L2-normalised."""
    identities = np.asarray(identities)
    p_all, g_all, s_all = [], [], []
    for ident in np.unique(identities):
        rows = np.flatnonzero(identities == ident)
        if rows.size < 2:
            continue
        sim = probes[rows] @ probes[rows].T  # cosine, rows normalised
        p, g = np.nonzero(~np.eye(rows.size, dtype=bool))
        p_all.append(rows[p])
        g_all.append(rows[g])
        s_all.append(sim[p, g])
    if not p_all:
        raise ConfigError("no probe identity has 2 or more images; MegaFace-style identification needs them")
    return GenuinePairs(np.concatenate(p_all), np.concatenate(g_all), np.concatenate(s_all).astype(np.float32))


def _search(index, queries: np.ndarray, k: int, batch: int = 4096) -> np.ndarray:
    out = np.empty((queries.shape[0], k), dtype=np.float32)
    for i in range(0, queries.shape[0], batch):
        out[i:i + batch], _ = index.search(queries[i:i + batch], k)
    return out


def _top_impostors(index, probes: np.ndarray, n_distractors: int, k_rank: int, k_global: int):
    """Each probe's top ``k_rank`` distractor scores (descending) and a pool of impostor scores
    that contains the global top ``k_global`` over all probe x distractor pairs, exactly.

    The global top-K of a union is made of each member's top-K, but searching K per probe would be
    wasteful: start with k = max(k_rank, 2K/P + 1) per probe, then re-search with k doubled only the
    probes whose smallest listed score is >= the pool's K-th largest score (only their unseen scores
    could still belong to the global top-K; the pool's K-th largest never exceeds the true one).
    """
    n_probes = probes.shape[0]
    k = min(n_distractors, max(k_rank, int(np.ceil(2 * k_global / n_probes)) + 1))
    top = _search(index, probes, k)
    lists = list(top)
    listed = np.full(n_probes, k)
    while True:
        pool = np.concatenate(lists)
        kth = np.partition(pool, pool.size - k_global)[pool.size - k_global]
        last = np.array([scores[-1] for scores in lists])
        need = np.flatnonzero((listed < n_distractors) & (last >= kth))
        if need.size == 0:
            return top[:, :k_rank], pool
        k_new = int(min(n_distractors, listed[need].max() * 2))
        found = _search(index, probes[need], k_new)
        for j, i in enumerate(need):
            lists[i] = found[j]
        listed[need] = k_new


@dataclass
class SizeResult:
    distractors: int
    cmc: np.ndarray  # (max_rank,)
    tar: dict[str, metrics.TarAtFar]
    search_seconds: float

    @property
    def rank1(self) -> float:
        return float(self.cmc[0])


@dataclass
class MegafaceResult:
    sizes: list[SizeResult]
    n_probe_images: int
    n_identities: int
    n_searches: int
    n_distractors_available: int
    seed: int
    synthetic_distractors: bool = False
    genuine_scores: np.ndarray = field(default=None, repr=False)
    impostor_sample: np.ndarray = field(default=None, repr=False)  # top impostor scores of the largest set

    def to_dict(self) -> dict:
        d = {
            "protocol": "MegaFace challenge-1 style (FaceScrub logic: each image of an identity in turn is the "
                        "gallery entry, the others probes); FAISS inner-product search on L2-normalised features",
            "probe_images": self.n_probe_images,
            "probe_identities": self.n_identities,
            "searches": self.n_searches,
            "distractors_available": self.n_distractors_available,
            "distractor_sizes": [s.distractors for s in self.sizes],
            "seed": self.seed,
            "rank1": {str(s.distractors): s.rank1 for s in self.sizes},
            "cmc": {str(s.distractors): s.cmc.tolist() for s in self.sizes},
            "tar_at_far": {k: v.tar for k, v in self.sizes[-1].tar.items()},
            "tar_at_far_by_size": {str(s.distractors): {k: v.to_dict() for k, v in s.tar.items()} for s in self.sizes},
            "search_seconds": {str(s.distractors): s.search_seconds for s in self.sizes},
        }
        if self.synthetic_distractors:
            d["WARNING"] = ("SYNTHETIC distractors (random unit vectors): the timings measure search speed only; "
                            "rank-1 and TAR are NOT face-recognition results")
            d["synthetic_distractors"] = True
        return d


def evaluate(
    probes: np.ndarray,
    identities: np.ndarray,
    distractors: np.ndarray,
    sizes: list[int] | None = None,
    seed: int = 0,
    max_rank: int = 10,
    fars=DEFAULT_FARS,
    synthetic: bool = False,
    progress=None,
) -> MegafaceResult:
    """Rank-1..``max_rank`` CMC and TAR@FAR for each distractor set size.

    ``probes`` (N, D) features with ``identities`` (N,) labels (identities with one image are
    ignored); ``distractors`` (M, D) features of other people. Features need not be normalised.
    """
    import faiss

    identities = np.asarray(identities)
    if probes.shape[0] != identities.size:
        raise ValueError(f"{probes.shape[0]} probe features but {identities.size} identity labels")
    if distractors.ndim != 2 or distractors.shape[1] != probes.shape[1]:
        raise ConfigError(f"distractor features {distractors.shape} do not match the probes' dimension {probes.shape[1]}")
    _, inverse, counts = np.unique(identities, return_inverse=True, return_counts=True)
    keep = counts[inverse] >= 2
    probes = normalise_rows(probes[keep])
    identities = identities[keep]
    pairs = genuine_pairs(probes, identities)
    n_probe = probes.shape[0]
    sizes = distractor_sizes(distractors.shape[0], sizes)
    order = np.random.default_rng(seed).permutation(distractors.shape[0])  # nested sets: the first n
    results = []
    impostor_top = None
    for n in sizes:
        t0 = time.perf_counter()
        index = faiss.IndexFlatIP(probes.shape[1])
        chosen = np.sort(order[:n])
        for i in range(0, n, 100_000):  # added in chunks: memory = the features + the index, no full copy
            index.add(normalise_rows(distractors[chosen[i:i + 100_000]]))
        n_impostors = n_probe * n
        k_global = min(n_impostors, int(np.floor(max(fars) * n_impostors + 1e-9)) + 1)
        k_rank = min(n, max_rank)
        top, impostor_top = _top_impostors(index, probes, n, k_rank, k_global)
        elapsed = time.perf_counter() - t0
        # rank = 1 + #(distractors scoring strictly higher than the gallery image), known up to k_rank
        above = (top[pairs.probe] > pairs.scores[:, None]).sum(1)
        ranks = 1 + above  # above == k_rank == max_rank means rank > max_rank: a miss for the CMC
        curve = metrics.cmc(ranks, max_rank)
        tar = metrics.tar_at_far(pairs.scores, impostor_top, n_impostors, fars)
        results.append(SizeResult(distractors=n, cmc=curve, tar=tar, search_seconds=elapsed))
        if progress is not None:
            progress(n, results[-1])
    return MegafaceResult(
        sizes=results, n_probe_images=n_probe, n_identities=int(np.unique(identities).size),
        n_searches=int(pairs.scores.size), n_distractors_available=int(distractors.shape[0]), seed=seed,
        synthetic_distractors=synthetic, genuine_scores=pairs.scores,
        impostor_sample=np.sort(impostor_top)[::-1][: 100_000] if impostor_top is not None else None,
    )


def synthetic_unit_vectors(n: int, dim: int, seed: int = 0, chunk: int = 100_000) -> np.ndarray:
    """``n`` random unit vectors (isotropic Gaussian, normalised), float32, built in chunks.
    For search-speed tests only: they are not faces."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    for i in range(0, n, chunk):
        block = rng.standard_normal((min(chunk, n - i), dim), dtype=np.float32)
        out[i:i + chunk] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def random_impostor_scores(probes: np.ndarray, distractors: np.ndarray, n: int = 200_000, seed: int = 0) -> np.ndarray:
    """Cosine scores of ``n`` uniformly drawn (probe, distractor) pairs: an unbiased sample of the
    impostor distribution for histograms (the exact TAR@FAR uses the top scores instead)."""
    rng = np.random.default_rng(seed)
    p = rng.integers(0, probes.shape[0], n)
    d = rng.integers(0, distractors.shape[0], n)
    a = normalise_rows(np.asarray(probes)[np.sort(np.unique(p))])
    pi = np.searchsorted(np.sort(np.unique(p)), p)
    b = normalise_rows(np.asarray(distractors)[np.sort(np.unique(d))])
    di = np.searchsorted(np.sort(np.unique(d)), d)
    return np.einsum("ij,ij->i", a[pi], b[di])


# --------------------------------------------------------------------------- probe and distractor files
def scan_folder(root: Path) -> list[str]:
    """Relative paths of every image below ``root``, sorted."""
    if not root.is_dir():
        raise DataNotFoundError(f"folder {root} does not exist.")
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def read_feature_list(path: str | Path, n: int) -> list[str]:
    """Row names of a feature file: a text file with one 'identity/image' per line, or a MegaFace
    devkit JSON list ({"id": [...], "path": [...]}; identity taken from "id")."""
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
    """An (N, D) feature matrix, memory-mapped."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"feature file {path} does not exist.")
    arr = np.load(path, mmap_mode="r")
    if arr.ndim != 2:
        raise ConfigError(f"{path}: expected an (N, D) feature matrix, got shape {arr.shape}.")
    return arr
