"""Classification on a TFLite interpreter: dequantize the output, take the top-k classes."""

import time
from collections import namedtuple

import numpy as np

from .errors import InputError
from .preprocess import Preprocessor, input_spec

Class = namedtuple("Class", ["id", "score"])
Class.__doc__ = "One classification result: class id and score."


def dequantize(values, scale, zero_point):
    """Quantized integers to real numbers.

    Args:
      values: an integer array. scale, zero_point: the tensor's quantization.
    Returns:
      float32 array; int64 arithmetic avoids the overflow of uint8/int8 subtraction.
    """
    return (scale * (values.astype(np.int64) - zero_point)).astype(np.float32)


def scores_of(output, detail):
    """The output tensor as a flat float vector of class scores."""
    scores = output.reshape(-1)
    scale, zero_point = detail.get("quantization", (0.0, 0))
    if np.issubdtype(scores.dtype, np.integer) and scale:
        return dequantize(scores, scale, zero_point)
    return scores.astype(np.float32, copy=False)


def top_k(scores, k=1, threshold=0.0):
    """Classes with a score above `threshold`, best first, at most `k` of them."""
    k = min(int(k), scores.size)
    if k <= 0:
        return []
    idx = np.argpartition(-scores, k - 1)[:k] if k < scores.size else np.arange(scores.size)
    idx = idx[np.argsort(-scores[idx], kind="stable")]
    return [Class(int(i), float(scores[i])) for i in idx if scores[i] > threshold]


class Classifier:
    """One image-classification model on one interpreter: preprocess, invoke, top-k."""

    def __init__(self, interpreter, mean=128.0, std=128.0, layout=None):
        self.interpreter = interpreter
        inputs = interpreter.get_input_details()
        if len(inputs) != 1:
            raise InputError(f"classify takes models with one input; this one has {len(inputs)}")
        self.input_detail = inputs[0]
        self.output_detail = interpreter.get_output_details()[0]
        self.preprocess = Preprocessor(input_spec(self.input_detail, layout), mean, std)
        self.num_classes = int(np.prod(self.output_detail["shape"]))
        self._in = self.input_detail["index"]
        self._out = self.output_detail["index"]

    def set_input(self, tensor):
        self.interpreter.set_tensor(self._in, tensor)

    def invoke(self):
        """Run the model once; returns the time it took in seconds."""
        start = time.perf_counter()
        self.interpreter.invoke()
        return time.perf_counter() - start

    def classes(self, k=1, threshold=0.0):
        out = self.interpreter.get_tensor(self._out)
        return top_k(scores_of(out, self.output_detail), k, threshold)

    def classify(self, hwc, k=1, threshold=0.0):
        """Decoded HWC pixels -> top-k classes (one inference)."""
        self.set_input(self.preprocess(hwc))
        self.interpreter.invoke()
        return self.classes(k, threshold)
