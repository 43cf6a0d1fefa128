"""Tiny ONNX graphs with the exact input/output signatures of models we cannot ship here.

The real ArcFace (w600k_mbf / w600k_r50) and genderage weights are not on these machines. These
graphs take the same inputs and give outputs of the same shape, and every output depends on the
layout, the channel order, the mean and the scale of the input — so a preprocessing mistake
changes the numbers a test compares against insightface's own reference code.
"""

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13
IR_VERSION = 8  # what onnxruntime of any recent version loads


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def arcface_like(path: Path, *, dim: int = 512, seed: int = 0) -> Path:
    """insightface ArcFace signature: input.1 [N, 3, 112, 112] → [N, dim].

    28-px average pooling keeps a coarse 4 × 4 layout per channel, then an affine map: the
    output depends on where each pixel is, its channel, and the input's offset and scale.
    Node names avoid Sub/Mul so that insightface's ArcFaceONNX picks (x - 127.5) / 127.5, as it
    does for the real w600k exports.
    """
    rng = np.random.default_rng(seed)
    weights = rng.normal(0, 0.05, (3 * 4 * 4, dim)).astype(np.float32)
    bias = rng.normal(0, 1, dim).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node(
                "AveragePool",
                ["input.1"],
                ["pooled"],
                kernel_shape=[28, 28],
                strides=[28, 28],
                name="pool",
            ),
            helper.make_node("Flatten", ["pooled"], ["flat"], axis=1, name="flatten"),
            helper.make_node("Gemm", ["flat", "W", "B"], ["embedding"], name="project"),
        ],
        "arcface_like",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["None", 3, 112, 112])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["None", dim])],
        initializer=[numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "B")],
    )
    return _save(graph, path)


def genderage_like(path: Path, *, seed: int = 1) -> Path:
    """insightface genderage signature: data [1, 3, 96, 96] → fc1 [1, 3].

    Like the real file, the first node is a BatchNormalization named bn_data (which is how
    insightface's Attribute recognises a model that normalises inside: mean 0, std 1).
    """
    rng = np.random.default_rng(seed)
    weights = rng.normal(0, 0.01, (3 * 3 * 3, 3)).astype(np.float32)
    bias = np.array([0.0, 0.0, 0.3], dtype=np.float32)
    ones, zeros = np.ones(3, np.float32), np.zeros(3, np.float32)
    graph = helper.make_graph(
        [
            helper.make_node(
                "BatchNormalization",
                ["data", "gamma", "beta", "mean", "var"],
                ["normed"],
                epsilon=1e-5,
                name="bn_data",
            ),
            helper.make_node(
                "AveragePool",
                ["normed"],
                ["pooled"],
                kernel_shape=[32, 32],
                strides=[32, 32],
                name="pool",
            ),
            helper.make_node("Flatten", ["pooled"], ["flat"], axis=1, name="flatten"),
            helper.make_node("Gemm", ["flat", "W", "B"], ["fc1"], name="fc1"),
        ],
        "genderage_like",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 96, 96])],
        [helper.make_tensor_value_info("fc1", TensorProto.FLOAT, [1, 3])],
        initializer=[
            numpy_helper.from_array(ones, "gamma"),
            numpy_helper.from_array(zeros, "beta"),
            numpy_helper.from_array(zeros, "mean"),
            numpy_helper.from_array(ones, "var"),
            numpy_helper.from_array(weights, "W"),
            numpy_helper.from_array(bias, "B"),
        ],
    )
    return _save(graph, path)
