"""POST /verify and POST /embed."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request

from ..inputs import body_doc, decode_images, parse_body
from ..schemas import EmbedForm, EmbedJSON, EmbedParams, EmbedResponse, FaceInfo, Timings, VerifyForm, VerifyJSON, VerifyParams, VerifyResponse
from ..state import ServiceDep
from .common import ERROR_RESPONSES, faces_or_raise

router = APIRouter(tags=["verification"])


@router.post("/verify", response_model=VerifyResponse, responses=ERROR_RESPONSES, openapi_extra=body_doc(VerifyForm, VerifyJSON))
async def verify(request: Request, service: ServiceDep) -> VerifyResponse:
    """Do two photos show the same person? ``image1`` and ``image2`` as multipart files (or base64
    in JSON). Returns the cosine similarity, the threshold used and where it came from (the model's
    calibration file, FAR 1e-3 unless ``operating_point`` or ``threshold`` say otherwise), the
    verdict, the faces used and timings."""
    t0 = time.perf_counter()
    params, blobs = await parse_body(request, VerifyParams, VerifyJSON, ("image1", "image2"))
    choice = service.verifier.threshold(params.threshold, params.operating_point)  # unknown operating point: 422 before any work
    images = await decode_images(service, blobs)
    t1 = time.perf_counter()
    result = await service.queue.submit([images["image1"], images["image2"]], [params.policy] * 2)
    a, b = faces_or_raise(result, ["image1", "image2"])
    verdict = service.verifier.compare(a, b, choice)  # the one verdict builder (the CLI's and the Python API's)
    total = 1e3 * (time.perf_counter() - t0)
    return VerifyResponse(
        **verdict,
        faces=[FaceInfo(**f.to_dict(params.include_crops)) for f in (a, b)],
        model=service.verifier.public_name,
        timings_ms=Timings(decode=1e3 * (t1 - t0), queue=result.queue_ms, inference=result.inference_ms, total=total),
        batch_images=result.batch_images,
    )


@router.post("/embed", response_model=EmbedResponse, responses=ERROR_RESPONSES, openapi_extra=body_doc(EmbedForm, EmbedJSON))
async def embed(request: Request, service: ServiceDep) -> EmbedResponse:
    """One photo (``image``) -> the L2-normalised embedding of its face, and the face it came from."""
    t0 = time.perf_counter()
    params, blobs = await parse_body(request, EmbedParams, EmbedJSON, ("image",))
    images = await decode_images(service, blobs)
    t1 = time.perf_counter()
    result = await service.queue.submit([images["image"]], [params.policy])
    (face,) = faces_or_raise(result, ["image"])
    return EmbedResponse(
        embedding=face.vector.tolist(),
        dim=int(face.vector.shape[0]),
        face=FaceInfo(**face.to_dict(params.include_crop)),
        model=service.verifier.public_name,
        timings_ms=Timings(decode=1e3 * (t1 - t0), queue=result.queue_ms, inference=result.inference_ms,
                           total=1e3 * (time.perf_counter() - t0)),
    )
