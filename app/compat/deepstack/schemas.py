"""Response bodies of the DeepStack vision API, field for field as its server sends them
(johnolafenwa/DeepStack server/response/response.go): boxes in integer pixels of the image as
sent, confidences in [0, 1], `duration` in seconds."""

from pydantic import BaseModel, Field

UNKNOWN_USERID = "unknown"


class DeepStackErrorOut(BaseModel):
    success: bool = Field(default=False, examples=[False])
    error: str = Field(description="what went wrong, for a person", examples=["invalid image"])
    duration: float = Field(default=0.0, description="seconds the API spent on the request")


class ObjectPrediction(BaseModel):
    confidence: float = Field(examples=[0.91])
    label: str = Field(description="COCO class name", examples=["person"])
    y_min: int
    x_min: int
    y_max: int
    x_max: int


class FacePrediction(BaseModel):
    confidence: float = Field(examples=[0.87])
    y_min: int
    x_min: int
    y_max: int
    x_max: int


class RecognizedFace(BaseModel):
    confidence: float = Field(
        description="similarity to the person (0 for unknown)", examples=[0.83]
    )
    userid: str = Field(description=f"the person's name, or {UNKNOWN_USERID!r}")
    y_min: int
    x_min: int
    y_max: int
    x_max: int


class DetectionOut(BaseModel):
    success: bool = True
    predictions: list[ObjectPrediction] = Field(description="highest confidence first")
    duration: float = 0.0


class FaceDetectionOut(BaseModel):
    success: bool = True
    predictions: list[FacePrediction] = Field(description="highest confidence first")
    duration: float = 0.0


class RecognitionOut(BaseModel):
    success: bool = True
    predictions: list[RecognizedFace] = Field(description="highest confidence first")
    duration: float = 0.0


class RegisterOut(BaseModel):
    success: bool = True
    message: str = Field(
        description="`face added` for a new userid, `face updated` for one that existed",
        examples=["face added"],
    )
    duration: float = 0.0


class FaceListOut(BaseModel):
    success: bool = True
    faces: list[str] = Field(description="every registered userid", examples=[["obama", "biden"]])
    duration: float = 0.0


class DeleteOut(BaseModel):
    success: bool = True
    duration: float = 0.0


class MatchOut(BaseModel):
    success: bool = True
    similarity: float = Field(description="similarity of the two faces", examples=[0.91])
    duration: float = 0.0


class PlatePrediction(BaseModel):
    """CodeProject.AI's ALPR module (codeproject/CodeProject.AI-ALPR, ALPR.py): one plate."""

    confidence: float = Field(description="the plate string's recognition confidence")
    label: str = Field(description="'Plate: ' + plate", examples=["Plate: KX51RTA"])
    plate: str = Field(description="upper-case letters and digits", examples=["KX51RTA"])
    y_min: int
    x_min: int
    y_max: int
    x_max: int


class AlprOut(BaseModel):
    success: bool = True
    predictions: list[PlatePrediction] = Field(description="highest confidence first")
    message: str = Field(examples=["Found Plate: KX51RTA"])
    processMs: int = Field(description="milliseconds the API spent")  # CodeProject.AI's name
    inferenceMs: int = Field(description="milliseconds of the job's inference")
    duration: float = 0.0
