"""Runners, one per runtime, with the same steps: activate, input metadata, infer, deactivate.

`runner_for(artefact, ...)` picks the runner for an Artefact's format; frameworks are imported
only when a runner is activated.
"""

from converters import formats

from .base import Runner, TensorMeta, tensor_meta  # noqa: F401


def runner_for(artefact, device="auto", runtime=None, torch_model=None, input_shape=None,
               trust_pickle=False, keras_unsafe=False):
    """The runner for `artefact` (a converters.artefact.Artefact)."""
    fmt = artefact.format
    meta = artefact.metadata
    if fmt in (formats.TFLITE, formats.TFLITE_INT8, formats.EDGETPU):
        from .tflite import TFLiteRunner

        return TFLiteRunner(artefact.path, meta, device=device, runtime=runtime, fmt=fmt)
    if fmt in (formats.ONNX, formats.ORT):
        from .onnxrt import OnnxRuntimeRunner

        return OnnxRuntimeRunner(artefact.path, meta, fmt=fmt)
    if fmt == formats.KERAS:
        from .tf import KerasRunner

        return KerasRunner(artefact.path, meta, unsafe=keras_unsafe)
    if fmt == formats.SAVEDMODEL:
        from .tf import SavedModelRunner

        return SavedModelRunner(artefact.path, meta)
    if fmt in formats.TORCH_FORMATS:
        from .torch import TorchRunner

        return TorchRunner(artefact.path, meta, fmt=fmt, factory=torch_model,
                           input_shape=input_shape, trust_pickle=trust_pickle)
    if fmt == formats.COREML:
        from .coreml import CoreMLRunner

        return CoreMLRunner(artefact.path, meta)
    from edge.errors import InputError

    raise InputError(f"no runner for format '{fmt}'")
