"""Response bodies of the DeepStack vision API, field for field as its server sends them
(johnolafenwa/DeepStack server/response/response.go): boxes in integer pixels of the image as
sent, confidences in [0, 1], `duration` in seconds."""

from pydantic import BaseModel, ConfigDict, Field

from app import openapi_examples as examples

UNKNOWN_USERID = "unknown"


class DeepStackErrorOut(BaseModel):
    success: bool = Field(default=False, examples=[False])
    error: str = Field(description="what went wrong, for a person", examples=["invalid image"])
    duration: float = Field(default=0.0, description="seconds the API spent on the request")


class DeepStackObjectPrediction(BaseModel):
    confidence: float = Field(examples=[0.91])
    label: str = Field(description="COCO class name", examples=["person"])
    y_min: int
    x_min: int
    y_max: int
    x_max: int


class DeepStackFacePrediction(BaseModel):
    confidence: float = Field(examples=[0.87])
    y_min: int
    x_min: int
    y_max: int
    x_max: int


class DeepStackRecognizedFace(BaseModel):
    confidence: float = Field(
        description="similarity to the person (0 for unknown)", examples=[0.83]
    )
    userid: str = Field(description=f"the person's name, or {UNKNOWN_USERID!r}")
    y_min: int
    x_min: int
    y_max: int
    x_max: int


class DeepStackDetectionOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.DEEPSTACK_DETECTION]})

    success: bool = True
    predictions: list[DeepStackObjectPrediction] = Field(description="highest confidence first")
    duration: float = 0.0


class DeepStackFaceDetectionOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.DEEPSTACK_FACES]})

    success: bool = True
    predictions: list[DeepStackFacePrediction] = Field(description="highest confidence first")
    duration: float = 0.0


class DeepStackRecognitionOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.DEEPSTACK_RECOGNITION]})

    success: bool = True
    predictions: list[DeepStackRecognizedFace] = Field(description="highest confidence first")
    duration: float = 0.0


class DeepStackRegisterOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.DEEPSTACK_REGISTERED]})

    success: bool = True
    message: str = Field(
        description="`face added` for a new userid, `face updated` for one that existed",
        examples=["face added"],
    )
    duration: float = 0.0


class DeepStackFaceListOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.DEEPSTACK_FACE_LIST]})

    success: bool = True
    faces: list[str] = Field(description="every registered userid", examples=[["obama", "biden"]])
    duration: float = 0.0


class DeepStackCustomModelsOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.DEEPSTACK_CUSTOM_MODELS]})

    success: bool = True
    models: list[str] = Field(
        description="what /v1/vision/custom/{model} runs: the workers' object pack",
        examples=[["yolox_nano"]],
    )
    duration: float = 0.0


class DeepStackDeleteOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.DEEPSTACK_DELETED]})

    success: bool = True
    duration: float = 0.0


class DeepStackMatchOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.DEEPSTACK_MATCH]})

    success: bool = True
    similarity: float = Field(description="similarity of the two faces", examples=[0.91])
    duration: float = 0.0


class CodeProjectPlatePrediction(BaseModel):
    """CodeProject.AI's ALPR module (codeproject/CodeProject.AI-ALPR, ALPR.py): one plate."""

    confidence: float = Field(description="the plate string's recognition confidence")
    label: str = Field(description="'Plate: ' + plate", examples=["Plate: KX51RTA"])
    plate: str = Field(description="upper-case letters and digits", examples=["KX51RTA"])
    y_min: int
    x_min: int
    y_max: int
    x_max: int


class CodeProjectAlprOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.CODEPROJECT_ALPR]})

    success: bool = True
    predictions: list[CodeProjectPlatePrediction] = Field(description="highest confidence first")
    message: str = Field(examples=["Found Plate: KX51RTA"])
    processMs: int = Field(description="milliseconds the API spent")  # CodeProject.AI's name
    inferenceMs: int = Field(description="milliseconds of the job's inference")
    duration: float = 0.0
