"""Rebuild the tiny TFLite models in tests/data/ (committed, a few KB each).

    python scripts/make_tiny_models.py     # needs TensorFlow ('convert' extra)

A 16x16 "color classifier" with hand-set weights, so tests can assert real predictions:
the mean pixel color decides the class (0 red, 1 green, 2 blue, 3 gray). Pixels are
normalized as (p - 128) / 128 for float inputs; quantized inputs carry that as their
quantization (scale 1/128, zero point 128 for uint8; 0 for int8).

  color_float.tflite   float32 NHWC input, softmax output
  color_nchw.tflite    float32 NCHW input (1x3x16x16)
  color_uint8.tflite   full-integer, uint8 input and output
  color_int8.tflite    full-integer, int8 input and output
"""
import os

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data")
W = np.array([[2, -1, -1], [-1, 2, -1], [-1, -1, 2], [0, 0, 0]], dtype=np.float32).T  # 3 x 4
B = np.array([0, 0, 0, 0.5], dtype=np.float32)


def build(nchw=False):
    import tensorflow as tf

    shape = (3, 16, 16) if nchw else (16, 16, 3)
    inp = tf.keras.Input(shape=shape, batch_size=1, name="image")
    x = tf.keras.layers.Permute((2, 3, 1))(inp) if nchw else inp
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    dense = tf.keras.layers.Dense(4, name="logits")
    x = dense(x)
    out = tf.keras.layers.Softmax(name="probs")(x)
    model = tf.keras.Model(inp, out)
    dense.set_weights([W * 2.0, B])
    return model


def representative(nchw=False):
    rng = np.random.default_rng(0)
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (128, 128, 128), (200, 50, 50), (30, 30, 30)]
    for i in range(60):
        c = np.array(colors[i % len(colors)], np.float32)
        img = np.clip(c + rng.normal(0, 40, (16, 16, 3)), 0, 255)
        x = ((img - 128.0) / 128.0).astype(np.float32)[None]
        yield [x.transpose(0, 3, 1, 2) if nchw else x]


def convert(model, quant=None, nchw=False):
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if quant:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: representative(nchw)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = quant
        conv.inference_output_type = quant
    return conv.convert()


def main():
    import tensorflow as tf

    os.makedirs(OUT, exist_ok=True)
    nhwc, nchw = build(), build(nchw=True)
    for name, data in (("color_float", convert(nhwc)), ("color_nchw", convert(nchw, nchw=True)),
                       ("color_uint8", convert(nhwc, tf.uint8)), ("color_int8", convert(nhwc, tf.int8))):
        path = os.path.join(OUT, f"{name}.tflite")
        with open(path, "wb") as f:
            f.write(data)
        print(f"{path}: {len(data)} bytes")


if __name__ == "__main__":
    main()
