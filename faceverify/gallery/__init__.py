"""The face gallery: collections -> subjects -> faces.

A *store* is the source of truth (collections, subjects, faces with their embeddings, the model
fingerprint, a change sequence): SQLite in a directory (one process; ``storage_sqlite``) or
PostgreSQL at a ``postgresql://`` URL (shared by several service replicas; ``storage_postgres``).
FAISS is only a search index over it (one a collection, ``collection_index``; all of them,
``index_set``), built from the store on start (SQLite: or loaded from a snapshot that provably
matches the database) and then kept in step with every change, in change-sequence order
(``change_follower``): a replica applies its own writes before acknowledging them, and follows
the other replicas' through LISTEN/NOTIFY plus a catch-up from the change sequence. Every
mutation is one durable transaction, so a ``kill -9`` at any moment loses no acknowledged
enrollment and leaves no half-state (the index is derived data and is never trusted across a crash).

Index type by size, per collection: an exact inner-product ``flat`` index up to ``flat_max``
faces, an ``ivf`` index (inner product, trained on the collection's own vectors) past it. Its
codes (``ivf_codec``) are 4-bit product-quantised with FAISS's SIMD "fast scan" (``pq4fs``, the
default: d/2 bytes a vector, 43 MB at 1M x 512, ~10x faster to scan than 8-bit codes),
8-bit scalar-quantised (``sq8``, d bytes) or float32 (``flat``, 4d bytes). The index only proposes
candidates (``rerank`` of them at least); their order and similarity come from the exact stored
embeddings, so coarse codes cost little recall. ``nprobe=None`` searches a third of the IVF
lists (``AUTO_NPROBE_FRACTION``). Vectors are L2-normalised, so inner product = cosine similarity. An optional PCA projection
(:class:`PCAProjection`, fitted on training embeddings) makes the indexed vectors compact; the
database always keeps the full embedding, so the projection can be changed by restarting.
"""

from ..errors import ConflictError, DimensionMismatchError, GalleryError, InvalidIdentifierError, NotFoundError
from .collection_index import AUTO_NPROBE_FRACTION, DEFAULT_RERANK, IVF_CODECS, CollectionIndex, resolve_nprobe
from .core import Gallery, open_storage
from .identifiers import FACE_ID_RE, IDENTIFIER_RE, validate_face_id, validate_identifier
from .projection import PCAProjection
from .records import CollectionInfo, FaceRecord, Hit, SubjectInfo, SubjectMatch
from .storage import is_postgres_url
from .storage_sqlite import DB_NAME, INDEX_DIR
from .vectors import l2_normalize

__all__ = [
    "AUTO_NPROBE_FRACTION", "DB_NAME", "DEFAULT_RERANK", "FACE_ID_RE", "IDENTIFIER_RE", "INDEX_DIR", "IVF_CODECS",
    "CollectionIndex", "CollectionInfo", "ConflictError", "DimensionMismatchError", "FaceRecord", "Gallery",
    "GalleryError", "Hit", "InvalidIdentifierError", "NotFoundError", "PCAProjection", "SubjectInfo", "SubjectMatch",
    "is_postgres_url", "l2_normalize", "open_storage", "resolve_nprobe", "validate_face_id",
    "validate_identifier",
]
