"""The gallery's large-collection index: IVF with 4-bit PQ fast-scan codes (or 8-bit, float32), automatic nprobe,
exact re-scoring of the candidates, and the streamed rebuild from SQLite."""

from __future__ import annotations

import math

import numpy as np
import pytest

from faceverify.errors import ConfigError
from faceverify.gallery import AUTO_NPROBE_FRACTION, Gallery, resolve_nprobe

DIM = 64


def synthetic_faces(rng, subjects: int, per_subject: int, dim: int = DIM):
    """Noisy copies of random unit centres (as bench/gallery_search.py makes them)."""
    centres = rng.standard_normal((subjects, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    noise = 0.6 / math.sqrt(dim)
    faces = np.repeat(centres, per_subject, axis=0) + noise * rng.standard_normal((subjects * per_subject, dim)).astype(np.float32)
    queries = centres + noise * rng.standard_normal(centres.shape).astype(np.float32)
    return faces, queries


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(params=["pq4fs", "sq8"])
def big(gallery_store, request):
    rng = np.random.default_rng(7)
    faces, queries = synthetic_faces(rng, 600, 5)
    g = Gallery(gallery_store, DIM, "m", flat_max=500, ivf_codec=request.param)
    g.create_collection("c")
    recs = g.enroll_many("c", [(f"s{i // 5}", v, {}) for i, v in enumerate(faces)])
    yield g, faces, queries, recs
    g.close()


def test_auto_nprobe_is_a_fraction_of_the_lists():
    assert resolve_nprobe(1000, None) == math.ceil(AUTO_NPROBE_FRACTION * 1000)
    assert resolve_nprobe(16, None) == 6
    assert resolve_nprobe(16, 64) == 16  # never more than the lists
    assert resolve_nprobe(1000, 32) == 32


def test_large_collection_is_ivf_with_exact_scores(big):
    g, faces, queries, recs = big
    desc = g.describe()["collections"]["c"]
    assert desc["type"] == "ivf" and desc["codec"] == g.ivf_codec and desc["size"] == 3000
    assert desc["nprobe"] == resolve_nprobe(desc["nlist"], None)
    exact = unit(faces) @ unit(queries).T  # (faces, queries)
    agree = 0
    for j, q in enumerate(queries[:100]):
        hits = g.search("c", q, k=1)
        assert len(hits) == 1  # more candidates are re-scored, k are returned
        row = recs.index(next(r for r in recs if r.face_id == hits[0].face_id))
        # the similarity is the exact cosine of the stored embedding, not the code's approximation
        assert hits[0].similarity == pytest.approx(float(exact[row, j]), abs=1e-5)
        agree += row == int(exact[:, j].argmax())
    assert agree >= 97  # recall@1 against exact search


def test_compressed_index_supports_deletes(big):
    g, faces, queries, recs = big
    top = g.search("c", queries[3], k=1)[0]
    g.delete_face("c", top.face_id)
    assert top.face_id not in {h.face_id for h in g.search("c", queries[3], k=10)}
    assert g.delete_subject("c", "s3") == 4
    assert all(h.subject != "s3" for h in g.search("c", queries[3], k=20))
    assert g.size == g.db_face_count() == 2995


def test_codec_choice_and_snapshot(tmp_path):
    rng = np.random.default_rng(8)
    faces, queries = synthetic_faces(rng, 200, 5)
    with Gallery(tmp_path, DIM, "m", flat_max=100, ivf_codec="flat") as g:
        g.create_collection("c")
        g.enroll_many("c", [(f"s{i // 5}", v, {}) for i, v in enumerate(faces)])
        assert g.describe()["collections"]["c"]["codec"] == "flat"
    with Gallery(tmp_path, DIM, "m", flat_max=100, ivf_codec="flat") as g:  # snapshot matches: loaded
        assert g.describe()["collections"]["c"]["codec"] == "flat"
    with Gallery(tmp_path, DIM, "m", flat_max=100) as g:  # another codec: rebuilt from the database
        assert g.describe()["collections"]["c"]["codec"] == "pq4fs" and g.size == 1000
        assert g.search("c", queries[0], k=5)[0].subject == "s0"
    with pytest.raises(ConfigError):
        Gallery(tmp_path / "x", DIM, ivf_codec="pq")


def test_fast_scan_needs_dimensions_in_eights(tmp_path):
    rng = np.random.default_rng(10)
    faces, queries = synthetic_faces(rng, 60, 5, dim=36)
    with Gallery(tmp_path, 36, flat_max=100) as g:
        g.create_collection("c")
        g.enroll_many("c", [(f"s{i // 5}", v, {}) for i, v in enumerate(faces)])
        assert g.describe()["collections"]["c"]["codec"] == "sq8"  # 36 = 4.5 x 8: 8-bit codes instead
        assert g.search("c", queries[2], k=1)[0].subject == "s2"


def test_rebuild_streams_every_row_in_chunks(gallery_store):
    dim = 8
    rng = np.random.default_rng(9)
    vecs = unit(rng.standard_normal((45_000, dim)).astype(np.float32))  # > 2 chunks of 20,000
    with Gallery(gallery_store, dim, flat_max=10**9, use_snapshot=False) as g:
        g.create_collection("c")
        recs = g.enroll_many("c", [(f"s{i % 1000}", v, {}) for i, v in enumerate(vecs)])
    with Gallery(gallery_store, dim, flat_max=10**9, use_snapshot=False) as g:
        assert g.size == 45_000
        for i in (0, 19_999, 20_000, 44_999):
            hit = g.search("c", vecs[i], k=1)[0]
            assert hit.face_id == recs[i].face_id and hit.similarity == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("codec", ["pq4fs", "sq8"])
def test_indexed_face_ids_follow_enrollment_and_deletion(tmp_path, codec):
    """``Gallery.indexes.face_ids`` (the faces a search can propose) reads exact and IVF indexes alike."""
    rng = np.random.default_rng(11)
    faces, _ = synthetic_faces(rng, 60, 5)
    with Gallery(tmp_path, DIM, "m", flat_max=100, ivf_codec=codec) as g:
        for name, n in (("small", 50), ("big", 300)):
            g.create_collection(name)
            records = g.enroll_many(name, [(f"s{i // 5}", v, {}) for i, v in enumerate(faces[:n])])
            before = g.indexes.face_ids(name)
            g.delete_face(name, records[0].face_id)
            after = g.indexes.face_ids(name)
            assert len(before) == n and after < before and len(before - after) == 1
        assert {d["type"] for d in g.describe()["collections"].values()} == {"flat", "ivf"}
