"""What every runner made by `runner_for` is wrapped in: the source's input names (the
sidecar's map, converters/names.py) and the recorded quantization of integer inputs.
converters/validation/names.py makes the map for each hop; this module applies it."""


def apply_input_quantization(runner, quant):
    """Give `runner`'s parameterless integer inputs the recorded (scale, zero_point)."""
    if not quant:
        return runner
    raw_metadata = runner.input_metadata

    def input_metadata():
        return [m._replace(scale=quant[m.name][0], zero_point=quant[m.name][1])
                if m.name in quant and not m.scale else m for m in raw_metadata()]

    runner.input_metadata = input_metadata
    return runner


def apply_name_map(runner, mapping):
    """Make `runner` speak the source's input names (its input_metadata, infer feeds and the
    per-input queries runners have); unchanged when the map is empty or the identity."""
    mapping = {k: v for k, v in (mapping or {}).items() if k != v}
    if not mapping or len(set(mapping.values())) != len(mapping):
        return runner
    back = {v: k for k, v in mapping.items()}
    raw_metadata, raw_infer, raw_dims = runner.input_metadata, runner._infer, runner.dim_names

    def input_metadata():
        return [m._replace(name=mapping.get(m.name, m.name)) for m in raw_metadata()]

    def _infer(feed):
        return raw_infer({back.get(k, k): v for k, v in feed.items()})

    def dim_names():
        return {mapping.get(k, k): v for k, v in (raw_dims() or {}).items()}

    runner.input_metadata, runner._infer, runner.dim_names = input_metadata, _infer, dim_names
    kinds = getattr(runner, "input_kinds", None)
    if callable(kinds):
        runner.input_kinds = lambda: {mapping.get(k, k): v for k, v in (kinds() or {}).items()}
    runner.name_map = dict(mapping)
    return runner
