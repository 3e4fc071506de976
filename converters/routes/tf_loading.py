"""Loading TF sources (Keras 3 `.keras`/`.h5`, SavedModel) for the TF-side converters.

Every converter from TF gets the same thing: a concrete function with one explicit input
signature (batch 1 unless --dynamic-batch), which is what tf2onnx, the TFLite converter and
coremltools all accept from Keras 3 without guessing.
"""

import os

from converters import formats
from edge.errors import InputError, ModelFormatError, first_line, require


def import_tf():
    """tensorflow, quietly (its C++ logging off unless the user asked for it)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return require("tensorflow", "convert", "converting a TF/Keras model", package="tensorflow-cpu")


def load_keras(path, options):
    """A Keras model from a .keras or .h5 file; Lambda layers only with keras_unsafe."""
    import_tf()
    import keras

    try:
        return keras.models.load_model(os.fspath(path), compile=False,
                                       safe_mode=not options.keras_unsafe)
    except Exception as e:  # a damaged file fails in zipfile, h5py, json or Keras itself
        if isinstance(e, ValueError) and ("Lambda" in str(e) or "safe_mode" in str(e)):
            raise InputError(f"{os.path.basename(path)} holds a Lambda layer (arbitrary code), "
                             "refused in Keras safe mode",
                             "only if you trust this file, pass --keras-unsafe") from None
        raise ModelFormatError(f"cannot load Keras model {path}: {first_line(e)}",
                               "is the file complete? re-save or re-download it") from None


def load_saved_model(path):
    """tf.saved_model.load(path), or one line naming TensorFlow's own loading error (exit 2).

    A SavedModel TensorFlow cannot restore (e.g. a Keras-era optimizer whose restore raises
    AttributeError 'add_slot', damaged variables, ops this TensorFlow lacks) is a property of
    the file, not an edgeport bug; every reader of SavedModels loads through here."""
    tf = import_tf()
    name = os.path.basename(os.fspath(path).rstrip("/" + os.sep)) or os.fspath(path)
    try:
        return tf.saved_model.load(os.fspath(path))
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as e:
        raise ModelFormatError(f"TensorFlow {getattr(tf, '__version__', '')} cannot load the SavedModel "
                               f"{name}: {type(e).__name__}: {first_line(e, 200)}",
                               "re-export it with this TensorFlow (tf.saved_model.save, or "
                               "model.export() from Keras), or convert it where it loads") from None


class TFSource:
    """A TF model as a callable with a fixed input signature.

    Attributes:
      fn: a tf.function taking the inputs positionally, returning a tensor or a list of them.
      specs: list of tf.TensorSpec (names kept from the model).
      output_names: names for the outputs (from the Keras model or the signature).
      keras_model: the Keras model when the source is Keras (else None).
    """

    def __init__(self, fn, specs, output_names, keras_model=None, saved_model=None):
        self.fn = fn
        self.specs = specs
        self.output_names = output_names
        self.keras_model = keras_model
        self.saved_model = saved_model

    @property
    def input_shape(self):
        return tuple(None if d is None else int(d) for d in self.specs[0].shape)

    def concrete(self):
        return self.fn.get_concrete_function(*self.specs)


def _shape(shape, options):
    """A model's input shape with the batch fixed to 1 unless --dynamic-batch."""
    shape = list(shape)
    if options.input_shape:
        given = list(options.input_shape)
        if len(given) != len(shape):
            raise InputError(f"--input-shape {given} has {len(given)} dimensions, the model's input "
                             f"{shape} has {len(shape)}")
        shape = given
    if shape and not options.dynamic_batch:
        shape[0] = 1 if shape[0] in (None, -1) else shape[0]
    elif shape and options.dynamic_batch:
        shape[0] = None
    if any(d in (None, -1) for d in shape[1:]):
        raise InputError(f"the model's input shape {shape} has unknown dimensions",
                         "give them with --input-shape, e.g. --input-shape 1 224 224 3")
    return shape


def load_tf_source(artefact, options):
    """A TFSource for a Keras or SavedModel artefact."""
    tf = import_tf()
    if artefact.format == formats.KERAS:
        model = load_keras(artefact.path, options)
        if len(model.inputs) != 1:
            specs = [tf.TensorSpec(_shape(i.shape, options), i.dtype, name=_clean(i.name))
                     for i in model.inputs]
        else:
            i = model.inputs[0]
            specs = [tf.TensorSpec(_shape(i.shape, options), i.dtype, name=_clean(i.name))]

        @tf.function
        def fn(*xs):
            return model(list(xs) if len(xs) > 1 else xs[0], training=False)

        outs = [_clean(o.name) for o in model.outputs]
        return TFSource(fn, specs, outs, keras_model=model)
    if artefact.format == formats.SAVEDMODEL:
        loaded = load_saved_model(artefact.path)
        sigs = getattr(loaded, "signatures", {}) or {}
        name = "serving_default" if "serving_default" in sigs else (sorted(sigs)[0] if sigs else None)
        if name is None:
            raise InputError(f"SavedModel {artefact.path} has no serving signature",
                             "export it with model.export() or tf.saved_model.save(..., signatures=)")
        sig = sigs[name]
        _, kw = sig.structured_input_signature
        in_names = sorted(kw)
        specs = [tf.TensorSpec(_shape(kw[n].shape, options), kw[n].dtype, name=n) for n in in_names]
        out_names = sorted(sig.structured_outputs)

        @tf.function
        def fn(*xs):
            res = sig(**dict(zip(in_names, xs)))
            return [res[n] for n in out_names] if len(out_names) > 1 else res[out_names[0]]

        return TFSource(fn, specs, out_names, saved_model=loaded)
    raise InputError(f"{artefact.path} is {artefact.format}, not a TF model")


def _clean(name):
    return name.split(":")[0].replace("/", "_") or "input"
