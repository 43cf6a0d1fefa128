"""CompreFace's JSON shapes (docs/Rest-API-description.md of exadel-inc/CompreFace, and its
Java DTOs): field names and nesting as CompreFace sends them. Optional parts (plugins,
status) are left out of a response when not asked for, as CompreFace does."""

import uuid
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from app import openapi_examples as examples
from app.schema_types import StorableText

SubjectName = Annotated[
    StorableText, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)
]

SIMILARITY = (
    "Lookout's calibrated similarity (0-1, the same scale for every embedding model): the same "
    "person scores above ~0.6, a stranger below ~0.4 (README: Similarity)"
)


class CompreFaceErrorOut(BaseModel):
    """Every error of /api/v1: CompreFace's own body and code numbers."""

    message: str = Field(examples=["No face is found in the given image"])
    code: int = Field(examples=[28], description="CompreFace's error code (28 no face, 42 …)")


class Box(BaseModel):
    probability: float = Field(description="detector score of the face")
    x_max: int
    y_max: int
    x_min: int
    y_min: int


# InsightFace's genderage model gives one age and a gender, no probability of either. CompreFace's
# InsightFace plugins, on the same model, answer probability 1.0 for both (their GenderDTO and
# AgeDTO defaults, embedding-calculator/src/services/dto/plugin_result.py), and clients expect a
# number there: Double Take shows `probability × 100` per cent, the .NET SDK's is a decimal.
PLUGIN_PROBABILITY = 1.0


class Age(BaseModel):
    probability: float = Field(default=PLUGIN_PROBABILITY, examples=[1.0])
    high: int
    low: int


class Gender(BaseModel):
    probability: float = Field(default=PLUGIN_PROBABILITY, examples=[1.0])
    value: str = Field(examples=["female"])


class FaceOut(BaseModel):
    """One face; plugin fields appear only when asked for with face_plugins (and available)."""

    age: Age | None = None
    gender: Gender | None = None
    embedding: list[float] | None = Field(default=None, description="face_plugins=calculator")
    box: Box
    landmarks: list[list[int]] | None = Field(default=None, description="face_plugins=landmarks")
    execution_time: dict[str, float] | None = Field(default=None, description="status=true")


class SubjectSimilarity(BaseModel):
    subject: str
    similarity: float = Field(description=SIMILARITY)


class RecognizedFace(FaceOut):
    subjects: list[SubjectSimilarity] = Field(
        description="the nearest distinct subjects, best first (at most prediction_count)"
    )


class VerifiedFace(FaceOut):
    similarity: float = Field(description=SIMILARITY)


class ExampleVerifiedFace(VerifiedFace):
    """A face compared with one face example (recognition/faces/{image_id}/verify)."""

    subject: str = Field(description="the example's subject")


class DetectOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.COMPREFACE_DETECTED]})

    result: list[FaceOut]
    plugins_versions: dict[str, str] | None = Field(default=None, description="status=true")


class RecognizeOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.COMPREFACE_RECOGNIZED]})

    result: list[RecognizedFace]
    plugins_versions: dict[str, str] | None = Field(default=None, description="status=true")


class FaceVerifyOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.COMPREFACE_FACE_VERIFIED]})

    result: list[ExampleVerifiedFace]
    plugins_versions: dict[str, str] | None = Field(default=None, description="status=true")


class VerificationResult(BaseModel):
    source_image_face: FaceOut
    face_matches: list[VerifiedFace]
    plugins_versions: dict[str, str] | None = Field(default=None, description="status=true")


class VerificationOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.COMPREFACE_VERIFIED]})

    result: list[VerificationResult]


class SubjectIn(BaseModel):
    subject: SubjectName = Field(examples=["obama"])


class SubjectOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.COMPREFACE_SUBJECT]})

    subject: str


class SubjectList(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.COMPREFACE_SUBJECTS]})

    subjects: list[str]


class Updated(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.COMPREFACE_UPDATED]})

    updated: bool


class Deleted(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.COMPREFACE_DELETED]})

    deleted: int


class Example(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.COMPREFACE_EXAMPLE]})

    """A face example: a face enrolled in Lookout's gallery (image_id = the enrolled face id)."""

    image_id: uuid.UUID
    subject: str


class ExamplePage(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.COMPREFACE_EXAMPLE_PAGE]})

    faces: list[Example]
    page_number: int
    page_size: int
    total_pages: int
    total_elements: int


class EmbeddingsIn(BaseModel):
    embeddings: list[list[float]] = Field(min_length=1)


class EmbeddingsVerifyIn(BaseModel):
    source: list[float] = Field(min_length=1)
    targets: list[list[float]] = Field(min_length=1)


class EmbeddingRecognition(BaseModel):
    embedding: list[float] = Field(description="the query embedding, as sent")
    similarities: list[SubjectSimilarity]


class EmbeddingRecognizeOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [examples.COMPREFACE_EMBEDDING_RECOGNIZED]}
    )

    result: list[EmbeddingRecognition]


class EmbeddingSimilarity(BaseModel):
    embedding: list[float] = Field(description="the embedding compared, as sent")
    similarity: float = Field(description=SIMILARITY)


class EmbeddingVerifyOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [examples.COMPREFACE_EMBEDDING_VERIFIED]}
    )

    result: list[EmbeddingSimilarity]
