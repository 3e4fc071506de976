"""Conversions, one module per tool that performs them, each edge registered with
`@conversion(source, target)` (see converters/registry.py and its CONVERSION_MODULES).

    tf2onnx.py           Keras, SavedModel, TFLite -> ONNX
    tflite_converter.py  Keras, SavedModel -> TFLite float and full-int8 (TFLiteConverter)
    onnxruntime.py       ONNX -> ORT
    coremltools.py       Keras, SavedModel, ONNX -> Core ML
    torch.py             PyTorch -> ONNX, TFLite float and full-int8, Core ML
    tf_loading.py, torch_loading.py   how sources of those frameworks are opened

May import: edge/, the converters root, converters.quantize, converters.toolenv. Never validation/ or edgetpu/
(a route writes one artefact; checking it is the pipeline's job), never edgeport/.
Frameworks are imported inside functions only.
"""
