"""A tiny NCHW ONNX image classifier built with onnx.helper (no framework, a few KB).

The color classifier of tests/data (scripts/make_tiny_models.py) as an ONNX graph taking
(1, 3, 16, 16) float images normalized as (pixel - 128) / 128: a 3x3 convolution (so
there is a conv to quantize and a layout to move), ReLU, global average pooling, a dense
layer and softmax. The mean color decides the class: 0 red, 1 green, 2 blue, 3 gray.
"""

import numpy as np

SIZE = 16
LABELS = ["red", "green", "blue", "gray"]
# Dense weights of the color classifier (make_tiny_models.py), on 6 channels: conv keeps
# each color's positive and negative part (ReLU would drop the negatives otherwise).
_W = np.array([[2, -1, -1], [-1, 2, -1], [-1, -1, 2], [0, 0, 0]], dtype=np.float32) * 2.0
_B = np.array([0, 0, 0, 0.5], dtype=np.float32)


def build(path, batch=1, opset=13):
    """Write the model to `path`; `batch` None leaves the batch dimension free ('N')."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    conv_w = np.zeros((6, 3, 3, 3), np.float32)
    for c in range(3):                       # centre tap: +x and -x of each channel
        conv_w[2 * c, c, 1, 1] = 1.0
        conv_w[2 * c + 1, c, 1, 1] = -1.0
    dense = np.zeros((4, 6), np.float32)
    dense[:, 0::2] = _W
    dense[:, 1::2] = -_W
    inits = [numpy_helper.from_array(conv_w, "conv_w"),
             numpy_helper.from_array(np.zeros(6, np.float32), "conv_b"),
             numpy_helper.from_array(dense, "fc_w"), numpy_helper.from_array(_B, "fc_b")]
    nodes = [
        helper.make_node("Conv", ["image", "conv_w", "conv_b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
    ]
    b = batch if batch is not None else "N"
    graph = helper.make_graph(
        nodes, "tiny_color", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [b, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [b, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="edgeport-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def write_colors(folder, size=(40, 30)):
    """Solid-color photos (red, green, blue, gray) in `folder`; returns the folder."""
    from PIL import Image

    colors = {"red": (230, 20, 20), "green": (20, 230, 20), "blue": (20, 20, 230), "gray": (128, 128, 128)}
    for name, rgb in colors.items():
        Image.new("RGB", size, rgb).save(f"{folder}/{name}.png")
    return folder


def write_labels(path):
    with open(path, "w") as f:
        f.write("\n".join(LABELS) + "\n")
    return path
