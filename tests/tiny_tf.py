"""Tiny TF/Keras models and calibration images the converter tests build for themselves."""

import os

import numpy as np

SIZE = 16
CLASSES = 5
LABELS = ["red", "green", "blue", "dark", "light"]


def build_classifier(path):
    """A small conv classifier on 16x16x3 inputs in 0..1, softmax over 5 classes, saved at `path`.

    Weights are seeded and the last layer scaled up so its classes are well separated on
    colored images (int8 top-1 checks need clear winners, not near-ties).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((SIZE, SIZE, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    x = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(CLASSES, name="logits")(x)
    out = keras.layers.Softmax(name="probs")(x)
    model = keras.Model(inp, out)
    # A few seconds of training on generated color fields: clear winners per color.
    arrays, labels = color_fields(60, seed=1)
    x = np.stack([a[2:18, 4:20] for a in arrays]).astype(np.float32) / 255.0
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy")
    model.fit(x, np.array(labels), epochs=40, batch_size=20, verbose=0)
    model.save(os.fspath(path))
    return model


BASES = [(220, 30, 30), (30, 200, 40), (40, 50, 220), (30, 30, 30), (230, 230, 220), (200, 60, 200)]
BASE_CLASS = [0, 1, 2, 3, 4, 0]


def color_fields(n, seed=0):
    """`n` noisy 20x24 color fields with a gradient, and their class (by base color)."""
    rng = np.random.default_rng(seed)
    arrays, labels = [], []
    for i in range(n):
        base = np.array(BASES[i % len(BASES)], np.float32)
        grad = np.linspace(-40, 40, 24, dtype=np.float32)[None, :, None]
        arr = base + grad + rng.normal(0, 20, (20, 24, 3))
        arrays.append(np.clip(arr, 0, 255).astype(np.uint8))
        labels.append(BASE_CLASS[i % len(BASES)])
    return arrays, labels


def make_images(folder, n=12, seed=0):
    """`n` colored PNG photos (noisy color fields with a gradient), 24x20 pixels."""
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    for i, arr in enumerate(color_fields(n, seed)[0]):
        Image.fromarray(arr).save(os.path.join(folder, f"img_{i:02d}.png"))
    return folder


def image_batch(folder, mean=0.0, std=255.0):
    """The folder's images preprocessed like the converters do: (N, 16, 16, 3) float32."""
    from converters.quantize.calibration import load_calibration

    cal = load_calibration(folder, {"mean": [mean], "std": [std], "size": [SIZE, SIZE]})
    return cal.stacked()


def run_tflite(path, x):
    """Outputs of a TFLite model (dequantized when its I/O is integer) for a float batch."""
    from ai_edge_litert.interpreter import Interpreter

    from edge.tensors import invoke_float

    it = Interpreter(model_path=os.fspath(path))
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    it.resize_tensor_input(inp["index"], [1, *x.shape[1:]])
    it.allocate_tensors()
    res = [invoke_float(it, sample[None])[0][0] for sample in x]
    return np.stack(res).astype(np.float32), inp, out


def run_onnx(path, x):
    import onnxruntime as ort

    sess = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: s[None]})[0] for s in x])
