"""Conversions, one module per tool that performs them, each edge registered with
`@conversion(source, target)` (see converters/registry.py and its CONVERSION_MODULES).

    tf2onnx.py           Keras, SavedModel, TFLite -> ONNX
    tflite_converter.py  Keras, SavedModel -> TFLite float and full-int8 (TFLiteConverter)
    onnxruntime.py       ONNX -> ORT
    onnx2tf.py           ONNX -> TFLite float (onnx2tf, run in its own environment: converters/toolenv)
    tflite_quantizer.py  float TFLite -> full-int8 TFLite (calibrated, bias-corrected)
    coremltools.py       Keras, SavedModel -> Core ML (coremltools), ONNX -> Core ML (onnx2coreml)
    torch.py             PyTorch -> ONNX, TFLite float and full-int8, Core ML
    tf_loading.py, torch_loading.py   how sources of those frameworks are opened

May import: edge/, the converters root, converters.quantize, converters.toolenv. Never validation/ or edgetpu/
(a route writes one artefact; checking it is the pipeline's job), never edgeport/.
Frameworks are imported inside functions only.

Imports: edge, converters, converters.quantize, converters.toolenv
"""
