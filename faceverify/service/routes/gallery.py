"""The gallery: collections -> subjects -> faces, and POST /identify."""

from __future__ import annotations

import hashlib
import time
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Path, Query, Request
from fastapi.concurrency import run_in_threadpool

from ...errors import DimensionMismatchError, InvalidEmbeddingError, InvalidInputError
from ...gallery import FACE_ID_RE, IDENTIFIER_RE, Gallery, validate_identifier
from ..auth import WriteAuth
from ..inputs import body_doc, decode_images, parse_body
from ..schemas import (
    Collection,
    CollectionList,
    CreateCollection,
    Deleted,
    EnrollForm,
    EnrollJSON,
    EnrollParams,
    Face,
    FaceInfo,
    FaceList,
    IdentifyForm,
    IdentifyJSON,
    IdentifyMatch,
    IdentifyParams,
    IdentifyResponse,
    Subject,
    SubjectDetail,
    SubjectList,
    Timings,
)
from ..state import ServiceDep
from .common import ERROR_RESPONSES, faces_or_raise

router = APIRouter(tags=["gallery"], responses=ERROR_RESPONSES)

# documented patterns; the gallery validates (invalid_identifier) so the error has its own code
CollectionName = Annotated[str, Path(description="collection name", json_schema_extra={"pattern": IDENTIFIER_RE.pattern})]
SubjectName = Annotated[str, Path(description="subject name", json_schema_extra={"pattern": IDENTIFIER_RE.pattern})]
FaceId = Annotated[str, Path(description="face id (32 hex digits)", json_schema_extra={"pattern": FACE_ID_RE.pattern})]


def unit_query(values: list[float], dim: int) -> np.ndarray:
    """A client's embedding as a float32 unit vector, or dimension_mismatch, or invalid_embedding:
    NaN/infinity, or all zeros (no direction: every similarity would be 0). Scaled by its largest
    value before the norm, so neither 1e300 nor 1e-300 over- or underflows."""
    v = np.asarray(values, dtype=np.float64)
    if v.size != dim:
        raise DimensionMismatchError(f"the query must be {dim}-d, got {v.size}-d.", field="embedding")
    if not np.isfinite(v).all():
        raise InvalidEmbeddingError("embedding holds NaN or infinity; send the finite numbers POST /embed returned.",
                                    field="embedding")
    peak = float(np.abs(v).max())
    if peak == 0.0:
        raise InvalidEmbeddingError("embedding is all zeros: it has no direction to compare; send the vector POST /embed returned.",
                                    field="embedding")
    v = v / peak
    return (v / np.linalg.norm(v)).astype(np.float32)


def _face(record) -> Face:
    return Face(face_id=record.face_id, collection=record.collection, subject=record.subject,
                created_at=record.created_at, info=record.info)


def _collection(info) -> Collection:
    return Collection(name=info.name, subjects=info.subjects, faces=info.faces, created_at=info.created_at)


@router.post("/collections", status_code=201, response_model=Collection, dependencies=[WriteAuth])
def create_collection(body: CreateCollection, service: ServiceDep) -> Collection:
    """Create an empty collection (409 conflict if it exists)."""
    return _collection(service.gallery.create_collection(body.name))


@router.get("/collections", response_model=CollectionList)
def list_collections(service: ServiceDep) -> CollectionList:
    return CollectionList(collections=[_collection(c) for c in service.gallery.list_collections()])


@router.get("/collections/{collection}", response_model=Collection)
def get_collection(collection: CollectionName, service: ServiceDep) -> Collection:
    return _collection(service.gallery.get_collection(collection))


@router.delete("/collections/{collection}", response_model=Deleted, dependencies=[WriteAuth])
def delete_collection(collection: CollectionName, service: ServiceDep) -> Deleted:
    """Delete a collection with all its subjects and faces."""
    return Deleted(deleted=collection, faces_removed=service.gallery.delete_collection(collection))


@router.get("/collections/{collection}/subjects", response_model=SubjectList)
def list_subjects(collection: CollectionName, service: ServiceDep) -> SubjectList:
    subjects = service.gallery.list_subjects(collection)
    return SubjectList(collection=collection, subjects=[Subject(name=s.name, faces=s.faces, created_at=s.created_at) for s in subjects])


@router.get("/collections/{collection}/subjects/{subject}", response_model=SubjectDetail)
def get_subject(collection: CollectionName, subject: SubjectName, service: ServiceDep) -> SubjectDetail:
    faces = service.gallery.list_faces(collection, subject)
    return SubjectDetail(collection=collection, name=subject, faces=[_face(f) for f in faces])


@router.delete("/collections/{collection}/subjects/{subject}", response_model=Deleted, dependencies=[WriteAuth])
def delete_subject(collection: CollectionName, subject: SubjectName, service: ServiceDep) -> Deleted:
    """Delete a subject and all its faces."""
    return Deleted(deleted=subject, faces_removed=service.gallery.delete_subject(collection, subject))


@router.post("/collections/{collection}/subjects/{subject}/faces", status_code=201, response_model=Face,
             dependencies=[WriteAuth], openapi_extra=body_doc(EnrollForm, EnrollJSON))
async def enroll_face(collection: CollectionName, subject: SubjectName, request: Request, service: ServiceDep) -> Face:
    """Enroll one photo (``image``) as a face of ``subject`` (created if new). The 201 is sent only
    after the face is committed to disk: an acknowledged enrollment survives a crash."""
    gallery: Gallery = service.gallery
    validate_identifier(subject, "subject")
    await run_in_threadpool(gallery.get_collection, collection)  # 404 before any inference
    params, blobs = await parse_body(request, EnrollParams, EnrollJSON, ("image",))
    images = await decode_images(service, blobs)
    result = await service.queue.submit([images["image"]], [params.policy])
    (face,) = faces_or_raise(result, ["image"])
    info = face.to_dict()
    info["image_sha256"] = hashlib.sha256(blobs["image"]).hexdigest()
    record = await run_in_threadpool(gallery.enroll, collection, subject, face.vector, info)
    return _face(record)


@router.get("/collections/{collection}/faces", response_model=FaceList)
def list_faces(collection: CollectionName, service: ServiceDep,
               subject: Annotated[str | None, Query(description="only this subject's faces")] = None) -> FaceList:
    return FaceList(collection=collection, faces=[_face(f) for f in service.gallery.list_faces(collection, subject)])


@router.delete("/collections/{collection}/faces/{face_id}", response_model=Deleted, dependencies=[WriteAuth])
def delete_face(collection: CollectionName, face_id: FaceId, service: ServiceDep) -> Deleted:
    """Delete one face; it disappears from search at once."""
    service.gallery.delete_face(collection, face_id)
    return Deleted(deleted=face_id, faces_removed=1)


@router.post("/identify", response_model=IdentifyResponse, openapi_extra=body_doc(IdentifyForm, IdentifyJSON))
async def identify(request: Request, service: ServiceDep) -> IdentifyResponse:
    """Who is this? One photo (``image``; or an ``embedding`` from POST /embed, JSON only) against
    ``collection``: the top-``k`` subjects by their best face's similarity, each flagged
    ``above_threshold`` against the calibrated (or given) threshold."""
    t0 = time.perf_counter()
    params, blobs = await parse_body(request, IdentifyParams, IdentifyJSON, (), optional_images=("image",))
    embedding = getattr(params, "embedding", None)  # JSON only
    if ("image" in blobs) == (embedding is not None):
        raise InvalidInputError("send exactly one of image (a photo) or embedding (a vector from POST /embed).")
    choice = service.verifier.threshold(params.threshold, params.operating_point)
    gallery: Gallery = service.gallery
    gallery.require_collection(params.collection)  # 404 before any inference (this replica's index: no database)
    face_info, queue_ms, inference_ms = None, 0.0, 0.0
    t1 = time.perf_counter()
    if embedding is not None:
        query = unit_query(embedding, gallery.dim)
    else:
        images = await decode_images(service, blobs)
        t1 = time.perf_counter()
        result = await service.queue.submit([images["image"]], [params.policy])
        (face,) = faces_or_raise(result, ["image"])
        query, face_info = face.vector, FaceInfo(**face.to_dict())
        queue_ms, inference_ms = result.queue_ms, result.inference_ms
    t2 = time.perf_counter()
    matches = await run_in_threadpool(gallery.identify, params.collection, query, params.k)
    t3 = time.perf_counter()
    index = gallery.describe()["collections"].get(params.collection, {})
    return IdentifyResponse(
        collection=params.collection,
        matches=[IdentifyMatch(subject=m.subject, similarity=m.similarity, face_id=m.face_id,
                               above_threshold=bool(m.similarity > choice.value)) for m in matches],
        threshold=choice.value,
        threshold_source=choice.to_dict(),
        face=face_info,
        index=index,
        timings_ms=Timings(decode=1e3 * (t1 - t0), queue=queue_ms, inference=inference_ms, search=1e3 * (t3 - t2),
                           total=1e3 * (t3 - t0)),
    )
