"""The options contract of each command family: typed dataclasses, no catch-all dict.

    ModelLoading      what opening a model needs (PyTorch factory, pickles, Keras Lambda
                      layers, input shapes, --input-shapes/--val-range/--data/--arg); shared by
                      convert (ConvertOptions) and validate (validation.validate.ValidateOptions),
                      built by edgeport.cli.args.model_loading from the shared argument groups
    ConvertOptions    every conversion: one object, passed to each registered function

Every field has a type; a field a command does not set keeps its default, so code reads
`options.name` and never guesses with getattr (tests/converters/test_options.py checks both).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:   # annotations only: the root never imports validation/ at run time
    from converters.validation.comparator import Tolerances
    from converters.validation.signature import InputOverrides

MIN_OPSET, MAX_OPSET = 7, 23   # tf2onnx and torch.onnx write these; 0 used to become 17 silently


@dataclass
class ModelLoading:
    """How far to trust a model file and how to shape its inputs (convert and validate)."""

    torch_model: str | None = None   # "module:factory" returning the nn.Module (with a state dict)
    trust_pickle: bool = False       # allow full pickles / TorchScript
    keras_unsafe: bool = False       # allow Lambda layers (arbitrary code) in Keras models
    input_shape: tuple[int, ...] | None = None   # e.g. (1, 3, 224, 224)
    # --input-shapes, --val-range, --data, --arg (None when none was given)
    input_overrides: InputOverrides | None = None

    def loading(self) -> ModelLoading:
        """Only the ModelLoading fields of this object (of a subclass too)."""
        return ModelLoading(**{f.name: getattr(self, f.name) for f in dataclasses.fields(ModelLoading)})


@dataclass
class ConvertOptions(ModelLoading):
    # PyTorch sources (the loading fields are ModelLoading's)
    dynamic_batch: bool = False
    opset: int | None = None
    # preprocessing spec of image inputs: {"size": [h, w], "layout": "NCHW"|"NHWC",
    #   "mean": [..], "std": [..]} in 0..255 pixel units, input = (pixel - mean) / std
    preprocessing: dict | None = None
    labels: str | None = None        # path to a labels file
    # full-int8 TFLite
    calibration: str | None = None   # folder of images
    calibration_data: str | None = None  # or an .npz of input arrays (--data), for non-image models
    calibration_count: int = 100
    io_dtype: str = "uint8"          # uint8 | int8
    bias_correction: bool = True     # correct each layer's quantized bias on the calibration set
    adaround: bool = True            # PyTorch -> int8: AdaRound the weights on the calibration set
    adaround_sweeps: int = 4
    adaround_damp: float = 0.01
    normalize_packed_outputs: bool = True  # int8: rescale packed outputs (quantize/packed_outputs)
    # ORT
    ort_optimization: str = "Fixed"  # Fixed | Runtime
    target_platform: str | None = None   # arm | amd64
    # Core ML
    coreml_target: str | None = None     # e.g. iOS16
    coreml_precision: str | None = None  # float16 (default) | float32: the ML program's compute precision
    author: str | None = None
    license: str | None = None
    description: str | None = None
    version: str | None = None
    # Edge TPU
    compiler: str = "auto"           # auto | local | docker | podman
    min_runtime_version: int | None = None
    num_segments: int | None = None
    search_delegate: bool = False
    timeout: float = 600.0
    # container backends (else EDGEPORT_CONTAINER_RUNTIME / _ULIMITS, EDGEPORT_COMPILER_IMAGE)
    container_runtime: str | None = None     # e.g. "runc"
    container_ulimits: tuple[str, ...] | None = None  # e.g. ("nofile=1024:1024", "nproc=1024:1024")
    compiler_image: str | None = None        # an existing image holding edgetpu_compiler
    compiler_base_image: str | None = None   # the base of the image edgeport builds
    # general
    quiet: bool = False
    # judgement of each hop, shared with `validate` (comparator.Tolerances: --atol, --rtol,
    # --output-role and the roles' thresholds); None: the defaults
    tolerances: Tolerances | None = None
    accept_unvalidated: bool = False  # exit 0 although an artefact could not be validated
    no_rewrite: bool = False         # never rewrite a graph for a tool (converters/rewrite)
    # set by the pipeline while one hop runs: the provenance block its format embeds
    provenance: dict | None = None

    def __post_init__(self) -> None:
        from edge.errors import InputError

        if self.opset is not None and not (isinstance(self.opset, int) and MIN_OPSET <= self.opset <= MAX_OPSET):
            raise InputError(f"--opset {self.opset} is not an ONNX opset edgeport can write",
                             f"pass {MIN_OPSET}..{MAX_OPSET}, or leave it out for 17")
        for name, value in (("calibration_count", self.calibration_count),
                            ("num_segments", self.num_segments),
                            ("min_runtime_version", self.min_runtime_version)):
            if value is not None and value < 1:
                raise InputError(f"--{name.replace('_', '-')} must be at least 1")
        if self.timeout is not None and not 0 < self.timeout < float("inf"):
            raise InputError("--timeout must be a positive number of seconds")

    def progress(self, message: str) -> None:
        if not self.quiet:
            import sys

            print(message, file=sys.stderr, flush=True)
