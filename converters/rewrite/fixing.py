"""What `--fix NAME=VALUE` asks, read once for both families (onnx_fix.py, tflite_fix.py):
the values given, a TFLite model's inputs they name, and the check, before any hop, that
every name is an input of the source."""


def fixed_values(options):
    """{input name: number or list} given with --fix (empty without)."""
    ov = options.input_overrides
    return dict(ov.fixed or {}) if ov is not None else {}


def _name(tensor):
    n = tensor.name
    return n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n)


def _fixed_inputs(model, wanted):
    """[(tensor index, the name the user gave)] of the main graph's inputs named in `wanted`,
    by tensor name or signature key."""
    g = model.subgraphs[0]
    keys = {}
    for sig in model.signatureDefs or ():
        for t in sig.inputs or ():
            k = t.name.decode("utf-8", "replace") if isinstance(t.name, bytes) else str(t.name)
            keys[t.tensorIndex] = k
    out = []
    for idx in g.inputs:
        for name in (_name(g.tensors[idx]), keys.get(idx)):
            if name in wanted:
                out.append((int(idx), name))
                break
    return out


def check_fixed_names(source, options):
    """Refuse (InputError, one line) a --fix that names no input of the source, or a source
    whose format no fixing rewrite reads (only ONNX and TFLite inputs become constants)."""
    wanted = fixed_values(options)
    if not wanted:
        return
    from edge.errors import InputError
    from edge.files import printable

    if source.format not in ("onnx", "tflite"):
        raise InputError(f"--fix turns inputs of ONNX and TFLite models into constants; this source is "
                         f"{source.format}", "convert it to ONNX or TFLite first, then fix the input")
    from converters.rewrite import _load
    from converters.rewrite.onnx import _graph_inputs

    if source.format == "onnx":
        names = [i.name for i in _graph_inputs(_load("onnx", source.path))]
    else:
        from converters.rewrite.tflite import _schema

        fu = _schema()
        model = fu.convert_bytearray_to_object(bytearray(_load("tflite", source.path)))
        found = {name for _, name in _fixed_inputs(model, wanted)}
        names = [_name(model.subgraphs[0].tensors[i]) for i in model.subgraphs[0].inputs]
        names += [n for n in wanted if n in found and n not in names]   # signature keys
    unknown = sorted(n for n in wanted if n not in names)
    if unknown:
        raise InputError(f"--fix names {', '.join(printable(n) for n in unknown)}, which is not an input "
                         f"of the model", "the inputs: " + ", ".join(printable(n) for n in names))
