"""Options shared by every conversion (one object, passed to each registered function)."""

from dataclasses import dataclass, field

MIN_OPSET, MAX_OPSET = 7, 23   # tf2onnx and torch.onnx write these; 0 used to become 17 silently


@dataclass
class ConvertOptions:
    # PyTorch sources
    torch_model: str = None          # "module:factory" returning the nn.Module (with a state dict)
    trust_pickle: bool = False       # allow full pickles / TorchScript
    input_shape: tuple = None        # e.g. (1, 3, 224, 224)
    dynamic_batch: bool = False
    opset: int = None
    # preprocessing spec of image inputs: {"size": [h, w], "layout": "NCHW"|"NHWC",
    #   "mean": [..], "std": [..]} in 0..255 pixel units, input = (pixel - mean) / std
    preprocessing: dict = None
    labels: str = None               # path to a labels file
    # full-int8 TFLite
    calibration: str = None          # folder of images
    calibration_data: str = None     # or an .npz of input arrays (--data), for non-image models
    calibration_count: int = 100
    io_dtype: str = "uint8"          # uint8 | int8
    # ORT
    ort_optimization: str = "Fixed"  # Fixed | Runtime
    target_platform: str = None      # arm | amd64
    # Core ML
    coreml_target: str = None        # e.g. iOS16
    coreml_precision: str = None     # float16 (default) | float32: the ML program's compute precision
    author: str = None
    license: str = None
    description: str = None
    version: str = None
    # Edge TPU
    compiler: str = "auto"           # auto | local | docker | podman
    min_runtime_version: int = None
    num_segments: int = None
    search_delegate: bool = False
    timeout: float = 600.0
    # container backends (else EDGEPORT_CONTAINER_RUNTIME / _ULIMITS, EDGEPORT_COMPILER_IMAGE)
    container_runtime: str = None    # e.g. "runc"
    container_ulimits: tuple = None  # e.g. ("nofile=1024:1024", "nproc=1024:1024")
    compiler_image: str = None       # an existing image holding edgetpu_compiler
    # general
    quiet: bool = False
    keras_unsafe: bool = False       # allow Lambda layers (arbitrary code) in Keras models
    # judgement of each hop, shared with `validate` (comparator.Tolerances: --atol, --rtol,
    # --output-role and the roles' thresholds); None: the defaults
    tolerances: object = None
    accept_unvalidated: bool = False  # exit 0 although an artefact could not be validated
    no_rewrite: bool = False         # never rewrite a graph for a tool (converters/rewrite)
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        from edge.errors import InputError

        if self.opset is not None and not (isinstance(self.opset, int) and MIN_OPSET <= self.opset <= MAX_OPSET):
            raise InputError(f"--opset {self.opset} is not an ONNX opset edgeport can write",
                             f"pass {MIN_OPSET}..{MAX_OPSET}, or leave it out for 17")
        for name in ("calibration_count", "num_segments", "min_runtime_version"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InputError(f"--{name.replace('_', '-')} must be at least 1")
        if self.timeout is not None and not 0 < self.timeout < float("inf"):
            raise InputError("--timeout must be a positive number of seconds")

    def progress(self, message):
        if not self.quiet:
            import sys

            print(message, file=sys.stderr, flush=True)
