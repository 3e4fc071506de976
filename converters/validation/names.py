"""One name per input across every hop: each artefact's sidecar maps its own input tensor
names to the source model's names, and every runner made by `runner_for` speaks the source's
names through that map. So --input-shapes, --data and --val-range keyed by the source's names
(a TorchScript forward's `x`, an ONNX graph's `images`) work on every artefact, and `convert`
and `validate` pair inputs the same way.

The sidecar block (`input_names`) and its readers are in converters/names.py; this module
makes the block for each hop (from the two models' runners) and puts it into every runner.
"""

from converters.names import KEY, match_names  # noqa: F401  (KEY: re-exported)
from converters.validation.runners.naming import (  # noqa: F401  (re-exported)
    apply_input_quantization,
    apply_name_map,
)


def public_inputs(artefact, options):
    """[TensorMeta] of `artefact`'s inputs under the source's names, in the artefact's order
    (its runner, through the artefact's own map); None when they cannot be read."""
    from converters.validation.runners import runner_for

    try:
        runner = runner_for(artefact, torch_model=options.torch_model, input_shape=options.input_shape,
                            trust_pickle=options.trust_pickle, keras_unsafe=options.keras_unsafe,
                            overrides=options.input_overrides)
        with runner:
            return list(runner.input_metadata())
    except Exception:  # noqa: BLE001 - a model whose inputs cannot be read keeps no map
        return None


def record_names(current, converted, options):
    """The `input_names` block for `converted`, made from hop source `current`; None when
    either side's inputs cannot be read."""
    from converters import formats

    if converted.format == formats.EDGETPU:   # the compiler keeps the int8 model's tensors
        inherited = (current.metadata or {}).get(KEY)
        return dict(inherited) if isinstance(inherited, dict) else None
    cached = getattr(current, "_public_inputs", None)
    source = cached if cached is not None else public_inputs(current, options)
    if source is None:
        return None
    current._public_inputs = source
    raw = dict(converted.metadata)
    raw.pop(KEY, None)
    from converters.artefact import Artefact

    mine = public_inputs(Artefact(converted.path, converted.format, raw), options)
    if mine is None:
        return None
    block = match_names([m.name for m in source], [m.name for m in mine])
    if block is None:
        return None
    # an integer input without parameters (tf2onnx's plain uint8) keeps the source's
    # (scale, zero_point), so every later hop can still feed it images
    by_name = {m.name: m for m in source}
    quant = {}
    for m in mine:
        s = by_name.get(block["names"][m.name])
        if (s is not None and not m.scale and s.scale and m.dtype == s.dtype
                and m.dtype.kind in "iu"):
            quant[m.name] = [s.scale, s.zero_point]
    if quant:
        block["quantization"] = quant
    return block


