"""A tiny YOLOv8-style ONNX detector built with onnx.helper (no framework, a few KB).

One output `[1, 4 + C, N]` as Ultralytics' detection head packs it: 4 box rows (cx, cy, w,
h) in input pixels (0..SIZE) beside C class-score rows after a sigmoid (0..1), concatenated
along axis 1. The backbone is a strided convolution that takes each cell's mean colour and
contrast; the head is two 1x1 convolutions. Its weights are fixed by hand, so the scores
answer to what is in a photo (bright, red, dark or textured cells score high) and spread
over 0..1 instead of being noise; the boxes move with the content too.

Input: (1, 3, SIZE, SIZE) float, pixels / 255 (NCHW). N = (SIZE / STRIDE) ** 2 cells.
"""

import numpy as np

SIZE = 256
STRIDE = 16
CLASSES = 3


def build(path, size=SIZE, stride=STRIDE):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    g = size // stride
    n = g * g
    stem, w_cls, b_cls, w_box, b_box, grid = _weights(size, stride)
    inits = [numpy_helper.from_array(stem, "stem_w"),
             numpy_helper.from_array(np.zeros(6, np.float32), "stem_b"),
             numpy_helper.from_array(w_cls[:, :, None, None], "cls_w"),
             numpy_helper.from_array(b_cls, "cls_b"),
             numpy_helper.from_array(w_box[:, :, None, None], "box_w"),
             numpy_helper.from_array(b_box, "box_b"),
             numpy_helper.from_array(grid, "grid"),
             numpy_helper.from_array(np.float32(stride).reshape(1), "stride"),
             numpy_helper.from_array(np.float32(4 * stride).reshape(1), "box_side"),
             numpy_helper.from_array(np.array([1, 4, n], np.int64), "box_shape"),
             numpy_helper.from_array(np.array([1, CLASSES, n], np.int64), "cls_shape"),
             numpy_helper.from_array(np.array([0], np.int64), "s0"),
             numpy_helper.from_array(np.array([2], np.int64), "s2"),
             numpy_helper.from_array(np.array([4], np.int64), "s4"),
             numpy_helper.from_array(np.array([1], np.int64), "axis1")]
    nodes = [
        helper.make_node("Conv", ["images", "stem_w", "stem_b"], ["feat"], strides=[stride, stride]),
        helper.make_node("Conv", ["feat", "cls_w", "cls_b"], ["cls_logits"]),
        helper.make_node("Sigmoid", ["cls_logits"], ["cls_map"]),
        helper.make_node("Reshape", ["cls_map", "cls_shape"], ["scores"]),
        helper.make_node("Conv", ["feat", "box_w", "box_b"], ["box_logits"]),
        helper.make_node("Sigmoid", ["box_logits"], ["box_map"]),
        helper.make_node("Reshape", ["box_map", "box_shape"], ["box_raw"]),
        helper.make_node("Slice", ["box_raw", "s0", "s2", "axis1"], ["xy_raw"]),
        helper.make_node("Slice", ["box_raw", "s2", "s4", "axis1"], ["wh_raw"]),
        helper.make_node("Add", ["xy_raw", "grid"], ["xy_cells"]),
        helper.make_node("Mul", ["xy_cells", "stride"], ["xy"]),      # centres in pixels
        helper.make_node("Mul", ["wh_raw", "box_side"], ["wh"]),      # sizes in pixels
        helper.make_node("Concat", ["xy", "wh"], ["boxes"], axis=1),
        helper.make_node("Concat", ["boxes", "scores"], ["output0"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny_yolo",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 4 + CLASSES, n])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="edgeport-tests")
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _weights(size, stride):
    """(stem conv OIHW, class head, class bias, box head, box bias, grid (1, 2, N))."""
    g = size // stride
    # backbone: per cell, the mean of R, G, B and of their squares' proxy (|x - 0.5|)
    stem = np.zeros((6, 3, stride, stride), np.float32)
    for c in range(3):
        stem[c, c] = 1.0 / (stride * stride)
    # a checkerboard filter per channel: local contrast (texture)
    checker = np.indices((stride, stride)).sum(0) % 2 * 2 - 1
    for c in range(3):
        stem[3 + c, c] = checker / (stride * stride) * 4.0
    # head: scores (bright, red, dark/texture) and box offsets, from the 6 features
    w_cls = np.array([[8, 8, 8, 0, 0, 0],         # bright
                      [16, -8, -8, 0, 0, 0],      # red
                      [-10, -10, -10, 12, 12, 12]],  # dark or textured
                     np.float32)
    b_cls = np.array([-16.0, -4.0, 5.0], np.float32)
    w_box = np.array([[1.5, -1, 0, 2, 0, 0],      # dx
                      [0, 1.5, -1, 0, 2, 0],      # dy
                      [1, 1, 1, 0, 0, 3],         # w
                      [-1, 1, 1, 3, 0, 0]],       # h
                     np.float32)
    b_box = np.array([-0.5, -0.5, -2.0, -1.5], np.float32)
    gy, gx = np.mgrid[0:g, 0:g].astype(np.float32)
    grid = np.stack([gx.ravel(), gy.ravel()])[None]                       # (1, 2, N)
    return stem, w_cls, b_cls, w_box, b_box, grid


def build_tflite(path, size=SIZE, stride=STRIDE):
    """The same detector as a float TFLite (NHWC input, the same [1, 4 + C, N] output), made
    with TensorFlow directly: the int8 route without onnx2tf, for the fast tests."""
    import tensorflow as tf

    g = size // stride
    n = g * g
    stem, w_cls, b_cls, w_box, b_box, grid = _weights(size, stride)
    k_stem = tf.constant(stem.transpose(2, 3, 1, 0))
    k_cls, k_box = tf.constant(w_cls.T), tf.constant(w_box.T)
    grid_t = tf.constant(grid)

    @tf.function(input_signature=[tf.TensorSpec([1, size, size, 3], tf.float32, name="images")])
    def detector(images):
        feat = tf.reshape(tf.nn.conv2d(images, k_stem, stride, "VALID"), [1, n, 6])
        scores = tf.transpose(tf.sigmoid(feat @ k_cls + b_cls), [0, 2, 1])
        raw = tf.transpose(tf.sigmoid(feat @ k_box + b_box), [0, 2, 1])
        xy = (raw[:, 0:2] + grid_t) * float(stride)
        wh = raw[:, 2:4] * float(4 * stride)
        return tf.concat([tf.concat([xy, wh], 1), scores], 1)

    conv = tf.lite.TFLiteConverter.from_concrete_functions([detector.get_concrete_function()], detector)
    with open(path, "wb") as f:
        f.write(conv.convert())
    return path
