"""Runners, one per runtime, with the same steps: activate, input metadata, infer, deactivate.

`runner_for(artefact, ...)` picks the runner for an Artefact's format; frameworks are imported
only when a runner is activated.
"""

from converters import formats
from converters.validation.runners.base import Runner, TensorMeta, tensor_meta  # noqa: F401


def runner_for(artefact, device="auto", runtime=None, torch_model=None, input_shape=None,
               trust_pickle=False, keras_unsafe=False, overrides=None):
    """The runner for `artefact` (a converters.artefact.Artefact), speaking the source model's
    input names when the artefact's sidecar maps its own to them (converters.validation.names)."""
    from converters.names import input_quantization, name_map
    from converters.validation.runners.naming import apply_input_quantization, apply_name_map

    runner = _runner_for(artefact, device, runtime, torch_model, input_shape, trust_pickle,
                         keras_unsafe, overrides)
    runner = apply_input_quantization(runner, input_quantization(artefact.metadata))
    return apply_name_map(runner, name_map(artefact.metadata))


def _runner_for(artefact, device, runtime, torch_model, input_shape, trust_pickle, keras_unsafe,
                overrides):
    fmt = artefact.format
    meta = artefact.metadata
    if fmt in (formats.TFLITE, formats.TFLITE_INT8, formats.EDGETPU):
        from converters.validation.runners.tflite import TFLiteRunner

        return TFLiteRunner(artefact.path, meta, device=device, runtime=runtime, fmt=fmt)
    if fmt in (formats.ONNX, formats.ORT):
        from converters.validation.runners.onnxrt import OnnxRuntimeRunner

        return OnnxRuntimeRunner(artefact.path, meta, fmt=fmt)
    if fmt == formats.KERAS:
        from converters.validation.runners.tf import KerasRunner

        return KerasRunner(artefact.path, meta, unsafe=keras_unsafe)
    if fmt == formats.SAVEDMODEL:
        from converters.validation.runners.tf import SavedModelRunner

        return SavedModelRunner(artefact.path, meta)
    if fmt in formats.TORCH_FORMATS:
        from converters.validation.runners.torch import TorchRunner

        return TorchRunner(artefact.path, meta, fmt=fmt, factory=torch_model,
                           input_shape=input_shape, trust_pickle=trust_pickle,
                           overrides=overrides)
    if fmt == formats.COREML:
        from converters.validation.runners.coreml import CoreMLRunner

        return CoreMLRunner(artefact.path, meta)
    from edge.errors import InputError

    raise InputError(f"no runner for format '{fmt}'")
