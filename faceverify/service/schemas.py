"""Request and response models (pydantic): the API contract, also the OpenAPI schema."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from ..detect import SELECTION_POLICIES
from ..gallery import IDENTIFIER_RE
from ..calibration import OPERATING_POINTS

Policy = Literal[SELECTION_POLICIES]  # type: ignore[valid-type]
OperatingPoint = Literal[OPERATING_POINTS]  # type: ignore[valid-type]


def _not_bool(value):
    # pydantic's lax mode reads JSON true as 1 (and 1.0); a boolean where a number belongs is a client bug
    if isinstance(value, bool):
        raise ValueError("must be a number, not a boolean")
    return value


def _integer(value):
    if isinstance(value, bool):
        raise ValueError("must be an integer, not a boolean")
    if isinstance(value, float):  # 3.0 would pass as 3; an integer field takes integers (or their text, in forms)
        raise ValueError("must be an integer")
    return value


Similarity = Annotated[float, BeforeValidator(_not_bool), Field(ge=-1.0, le=1.0, allow_inf_nan=False)]
# non-finite values parse here and are refused by /identify as invalid_embedding (one code for "no usable vector")
EmbeddingValue = Annotated[float, BeforeValidator(_not_bool)]
Base64Image = Annotated[str, Field(description="the image file's bytes, base64-encoded (a data: URL is accepted too)", max_length=32 * 1024 * 1024)]
Identifier = Annotated[str, Field(description="letters, digits, '_', '-', '.'; starts with a letter or digit; at most 64",
                                  pattern=IDENTIFIER_RE.pattern, min_length=1, max_length=64)]
Binary = Annotated[bytes, Field(json_schema_extra={"format": "binary", "type": "string"})]

POLICY_HELP = ("which face when an image holds several: largest_central (default: the largest face near the centre), "
               "largest, central, highest_score, or reject (multiple_faces error)")


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- requests -----------------------------------------------------------------------------------


class VerifyParams(_Params):
    threshold: Similarity | None = Field(None, description="override the calibrated threshold (cosine similarity)")
    operating_point: OperatingPoint | None = Field(None, description="which calibrated threshold: FAR 1e-2, 1e-3, 1e-4 or best LFW "
                                                         "View 1 accuracy (default: the model's, chosen on LFW View 1)")
    policy: Policy = Field("largest_central", description=POLICY_HELP)
    include_crops: bool = Field(False, description="return the aligned crops as base64 PNG (the demo page uses them)")


class VerifyJSON(VerifyParams):
    image1: Base64Image
    image2: Base64Image


class VerifyForm(VerifyParams):
    image1: Binary
    image2: Binary


class EmbedParams(_Params):
    policy: Policy = Field("largest_central", description=POLICY_HELP)
    include_crop: bool = False


class EmbedJSON(EmbedParams):
    image: Base64Image


class EmbedForm(EmbedParams):
    image: Binary


class EnrollParams(_Params):
    policy: Policy = Field("reject", description="enrollment refuses photos with several faces by default; " + POLICY_HELP)


class EnrollJSON(EnrollParams):
    image: Base64Image


class EnrollForm(EnrollParams):
    image: Binary


class IdentifyParams(_Params):
    collection: Identifier
    k: Annotated[int, BeforeValidator(_integer)] = Field(5, ge=1, le=100, description="how many subjects to return (an integer)")
    threshold: Similarity | None = Field(None, description="override the calibrated threshold for above_threshold")
    operating_point: OperatingPoint | None = None  # None: the model's default operating point
    policy: Policy = Field("largest_central", description=POLICY_HELP)


class IdentifyJSON(IdentifyParams):
    image: Base64Image | None = Field(None, description="a photo (base64); or give embedding")
    embedding: list[EmbeddingValue] | None = Field(
        None, max_length=8192, description="an embedding from POST /embed of this server's model, instead of a photo "
                                           "(finite numbers, not all zero; it is L2-normalised)")


class IdentifyForm(IdentifyParams):
    image: Binary


class CreateCollection(_Params):
    name: Identifier


# -- responses ----------------------------------------------------------------------------------


class FaceInfo(BaseModel):
    source: str = Field(description="mtcnn: detected; landmarks: given")
    box: list[float] | None = Field(None, description="x1, y1, x2, y2 in the input image's pixels")
    score: float | None = Field(None, description="MTCNN probability")
    landmarks: list[list[float]] = Field(description="5 (x, y) points: left eye, right eye, nose, left/right mouth corner")
    faces_found: int = Field(description="faces detected in the image")
    policy: str = Field(description="the rule that chose this face")
    crop_png: str | None = Field(None, description="the aligned crop, base64 PNG (when asked for)")


class ThresholdSource(BaseModel):
    source: Literal["calibration", "request", "uncalibrated_default"]
    operating_point: str | None = None
    file: str | None = Field(None, description="the name of the calibration file the threshold came from (never a path)")


class Timings(BaseModel):
    decode: float = 0.0
    queue: float = 0.0
    inference: float = 0.0
    search: float | None = None
    total: float = 0.0


class VerifyResponse(BaseModel):
    similarity: float = Field(description="cosine similarity of the two faces' embeddings, in [-1, 1]")
    threshold: float = Field(description="same_person = similarity > threshold")
    same_person: bool
    threshold_source: ThresholdSource
    faces: list[FaceInfo] = Field(description="the face used in image1 and in image2")
    model: str = Field(description="the model's id and weights hash, e.g. default@sha256:0123456789abcdef")
    timings_ms: Timings
    batch_images: int = Field(description="images in the inference micro-batch this request shared")


class EmbedResponse(BaseModel):
    embedding: list[float] = Field(description="L2-normalised embedding")
    dim: int
    face: FaceInfo
    model: str
    timings_ms: Timings


class Collection(BaseModel):
    name: str
    subjects: int
    faces: int
    created_at: float


class CollectionList(BaseModel):
    collections: list[Collection]


class Subject(BaseModel):
    name: str
    faces: int
    created_at: float


class SubjectList(BaseModel):
    collection: str
    subjects: list[Subject]


class Face(BaseModel):
    face_id: str
    collection: str
    subject: str
    created_at: float
    info: dict = Field(default_factory=dict, description="the detection used (box, score, landmarks) and the image's sha256")


class FaceList(BaseModel):
    collection: str
    faces: list[Face]


class SubjectDetail(BaseModel):
    collection: str
    name: str
    faces: list[Face]


class Deleted(BaseModel):
    deleted: str
    faces_removed: int


class IdentifyMatch(BaseModel):
    subject: str
    similarity: float = Field(description="best cosine similarity over the subject's faces")
    face_id: str = Field(description="the face that matched best")
    above_threshold: bool


class IdentifyResponse(BaseModel):
    collection: str
    matches: list[IdentifyMatch]
    threshold: float
    threshold_source: ThresholdSource
    face: FaceInfo | None = Field(None, description="the query face (absent when an embedding was given)")
    index: dict = Field(description="the collection's index (type flat|ivf, size, ...)")
    timings_ms: Timings


class HealthResponse(BaseModel):
    status: Literal["ok", "unavailable"]
    live: bool = True
    ready: bool
    model: dict | None = None
    gallery: dict | None = None
    queue: dict | None = None
    runtime: dict | None = Field(None, description="thread policy in effect: torch_threads, omp_wait_policy, kmp_blocktime")
    problems: list[str] = Field(default_factory=list)


class ErrorResponse(BaseModel):
    code: str = Field(description="stable machine-readable error code (see docs/service.md)")
    message: str = Field(description="what happened and what to do")
    details: dict = Field(default_factory=dict)
