"""The workstation side: conversions, quantization, the Edge TPU compiler and validation.

Rooms (each package's own docstring says what lives there and what it may import):

    converters/              registry + planner (registry, pipeline/: plan, hop, model,
                             folder), formats, artefact,
                             metadata, options, atomic writes, reference_models,
                             manifest (shard manifests for `convert --shard` and their merge)
    converters/routes/       one module per conversion tool, each registering its edges
    converters/quantize/     calibration data, AdaRound, bias correction, full-int8 TFLite
    converters/edgetpu/      compile (the tflite-int8 -> edgetpu edge), compiler backends,
                             the compiler's log, Coral's op table, the mapping predictor
    converters/validation/   runners per runtime, data sources, comparator, reports,
                             and the library behind `check`, `eval` and `inspect`
    converters/toolenv/      isolated environments for tools whose pins clash with ours
                             (onnx2tf), built on first use from pinned requirements
    converters/rewrite/      small registered graph rewrites a tool needs (DENSIFY into dense
                             constants, pinned inputs folded), applied by the pipeline only
                             where a route needs one, always validated against the original

The root modules may import edge/ and each other; `pipeline` alone reaches into routes/
(through the registry) and validation/ (to validate each hop): of its modules, `plan` (the
labels a Core ML route embeds) and `hop` (convert, rewrite, validate) do. `options` names
validation's types in its annotations only (never imported at run time). Nothing here parses command
lines: that is edgeport/cli/. tests/project/test_architecture.py holds these rules.

Imports: edge, converters.routes (pipeline, plan, hop, registry), converters.validation (pipeline, hop, options), converters.edgetpu (registry), converters.rewrite (pipeline, plan, hop, model)
"""
