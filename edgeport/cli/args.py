"""Argument groups every command shares, declared and validated once.

Each `add_*` function adds one group of flags to a command's parser; the value types below
refuse, at parse time, numbers that make no sense for a flag (NaN and infinity always; zero
or negatives where the flag needs a positive value). A refused value is one `error:` line and
exit status 2, like every other usage error. One function per group turns the parsed flags
into the value the library takes, without changing `args`: `preprocessing(args)` (a dict),
`input_shape(args)`, `model_loading(args)` (converters.options.ModelLoading, which convert's
and validate's options extend) and `judgement(args)` (Tolerances). A group added without
some of its flags sets those to their defaults, so every attribute of a group is always
there to read (no getattr fallbacks).

Every number flag has a lower and an upper bound (a count of 10**20 would exhaust memory
before failing): each type below carries its rule, and the Parser appends the rule to the
flag's help, so `--help` always states the bound the parser enforces. Values of string flags
are refused at parse time when empty or not valid UTF-8 (a path with undecodable bytes).

Rules per flag (the `rule` of each type; shown in each flag's help):
  --size N                  integers from 1 to 16384
  --input-shape D (old)     integers from 1 to 2**31-1
  --samples, --count ...    integers from 1 to 100000; --runs up to 10**6
  --jobs                    integers from 1 to min(64, 4 x CPU cores)
  --warmup                  integers from 0 to 100000; --seed 0 to 2**32-1
  --std                     finite numbers > 0 and <= 1e6; --mean finite, within +-1e6
  --timeout                 finite numbers > 0 and <= 86400 (a day)
  classify --threshold      any finite number
  --atol, --rtol, --max-scale-error                                finite numbers >= 0
  --quantile, --min-top1                                           finite numbers in [0, 1]
  --min-cosine                                                     finite numbers in [-1, 1]
  --min-recall, --min-precision, --score-threshold, --iou, --label-threshold,
  --min-label-agreement, --min-f1, --min-pixel-agreement           finite numbers in [0, 1]
  --max-range-error                                                finite numbers >= 0
  --output-role                                                    OUTPUT:ROLE, a known role
"""

import argparse
import math
import sys

TFLITE_RUNTIMES = ("ai_edge_litert", "tflite_runtime", "tensorflow")
LAYOUTS = ("NHWC", "NCHW")


class Parser(argparse.ArgumentParser):
    """argparse with edgeport's error convention: one `error: ...` line on stderr, exit 2.

    Also: an empty value or one that is not valid UTF-8 is refused for every flag and
    argument; each typed flag's help ends with the rule its type enforces."""

    def _get_value(self, action, arg_string):
        # (the subcommand's own parser checks the arguments after the command name)
        if isinstance(arg_string, str) and not isinstance(action, argparse._SubParsersAction):
            if arg_string == "" and not (action.choices and "" in action.choices):
                raise argparse.ArgumentError(action, "empty value" + (
                    f"; expected {action.type.rule}" if getattr(action.type, "rule", None) else ""))
            if any(0xDC80 <= ord(c) <= 0xDCFF for c in arg_string):
                from edge.files import printable

                raise argparse.ArgumentError(action, f"'{printable(arg_string)}' is not valid UTF-8 "
                                                     f"(a file name with undecodable bytes?); rename it")
        return super()._get_value(action, arg_string)

    def format_help(self):
        for a in self._actions:
            rule = getattr(a.type, "rule", None)
            if rule and a.help and a.help is not argparse.SUPPRESS and rule not in a.help:
                a.help = f"{a.help} ({rule})"
        return super().format_help()

    def error(self, message):
        from edge.files import printable

        # the message may quote the user's value: escaped, so it stays one line
        self.exit(2, f"error: {printable(message)} (see '{self.prog} --help')\n")

    def _print_message(self, message, file=None):
        # Help and usage are edgeport's own lines: written one by one, so the escaping
        # stream (edgeport/cli/output.py) keeps their line breaks.
        if message:
            file = file or sys.stderr
            for line in message.splitlines(keepends=True):
                file.write(line)


# -- value types -------------------------------------------------------------------------------
def _typed(name, cast, check, rule, bounds=None, integer=None):
    """An argparse type: `cast` the text, then refuse values for which `check` is false."""

    def parse(text):
        try:
            value = cast(text)
        except (TypeError, ValueError):
            kind = "an integer" if (cast is int if integer is None else integer) else "a number"
            raise argparse.ArgumentTypeError(f"'{text}' is not {kind}; expected {rule}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"'{text}' is not a finite number; expected {rule}")
        if not check(value):
            raise argparse.ArgumentTypeError(f"'{text}' is out of range; expected {rule}")
        return value

    parse.__name__ = name  # argparse names the type in some messages
    parse.rule = rule
    parse.bounds = bounds
    return parse


def int_range(lo, hi, name="integer"):
    """An integer type refusing values outside [lo, hi] (text longer than 40 characters too)."""
    shown = "2**31-1" if hi == (1 << 31) - 1 else "2**32-1" if hi == (1 << 32) - 1 else str(hi)
    rule = f"an integer from {lo} to {shown}"
    return _typed(name, lambda t: int(t) if len(str(t).strip()) <= 40 else int("x"),
                  lambda v: lo <= v <= hi, rule, (lo, hi), integer=True)


def float_range(lo, hi, name="number", low_open=False):
    """A finite float type refusing values outside [lo, hi] (or (lo, hi] with `low_open`)."""
    def shown(x):
        return str(int(x)) if float(x).is_integer() and abs(x) < 1e7 else f"{x:g}"

    rule = (f"a finite number > {shown(lo)} and <= {shown(hi)}" if low_open
            else f"a finite number from {shown(lo)} to {shown(hi)}")
    return _typed(name, float, (lambda v: lo < v <= hi) if low_open else (lambda v: lo <= v <= hi),
                  rule, (lo, hi))


def _max_jobs():
    import os

    return max(1, min(64, 4 * (os.cpu_count() or 1)))


MAX_JOBS = _max_jobs()
size_int = int_range(1, 16384, "size")
dim_int = int_range(1, (1 << 31) - 1, "dimension")
count_int = int_range(1, 100000, "count")
runs_int = int_range(1, 1000000, "runs")
warmup_int = int_range(0, 100000, "warmup")
seed_int = int_range(0, (1 << 32) - 1, "seed")
threads_int = int_range(1, 256, "threads")
top_k_int = int_range(1, 1000, "top_k")
jobs_int = int_range(1, MAX_JOBS, "jobs")
opset_int = int_range(1, 100, "opset")
version_int = int_range(1, 1000, "version")
segments_int = int_range(1, 64, "segments")
limit_int = int_range(1, 10 ** 7, "limit")
mean_float = float_range(-1e6, 1e6, "mean")
std_float = float_range(0, 1e6, "std", low_open=True)
timeout_float = float_range(0, 86400, "seconds", low_open=True)


positive_int = _typed("positive_int", int, lambda v: v >= 1, "an integer >= 1")
non_negative_int = _typed("non_negative_int", int, lambda v: v >= 0, "an integer >= 0")
finite_float = _typed("finite_float", float, lambda v: True, "a finite number")
positive_float = _typed("positive_float", float, lambda v: v > 0, "a finite number > 0")
non_negative_float = _typed("non_negative_float", float, lambda v: v >= 0, "a finite number >= 0")
fraction = _typed("fraction", float, lambda v: 0 <= v <= 1, "a finite number between 0 and 1")
cosine = _typed("cosine", float, lambda v: -1 <= v <= 1, "a finite number between -1 and 1")


def checked(value_type, flag):
    """A plain function for values parsed after argparse (e.g. OUTPUT:VALUE pairs): the value,
    or InputError naming `flag` and the rule."""
    from edge.errors import InputError

    def parse(text):
        try:
            return value_type(text)
        except argparse.ArgumentTypeError as e:
            raise InputError(f"argument {flag}: {e}") from None

    return parse


# -- groups ------------------------------------------------------------------------------------
def add_json(p, what="print one JSON object instead of text"):
    p.add_argument("--json", action="store_true",
                   help=f"{what} (the envelope: command, edgeport_version, exit_code)")


def add_preprocessing(p, size=True, layout=True, pycoral_flags=False):
    """--size --mean --std --layout: how pixels become the model's input.

    `pycoral_flags` adds classify_image.py's spellings -a/--input_mean and -s/--input_std.
    """
    g = p.add_argument_group("preprocessing (pixels 0..255, input = (pixel - mean) / std)")
    if size:
        g.add_argument("--size", type=size_int, nargs="+", metavar="N",
                       help="image input size: H W, or one number for a square")
    else:
        g.set_defaults(size=None)
    mean = ["-a", "--input_mean", "--mean"] if pycoral_flags else ["--mean"]
    std = ["-s", "--input_std", "--std"] if pycoral_flags else ["--std"]
    g.add_argument(*mean, dest="mean", type=mean_float, nargs="+", metavar="M",
                   help="mean, one value or one per channel, 0..255 units (default: the model's "
                        "sidecar" + (", else 128)" if pycoral_flags else ")"))
    g.add_argument(*std, dest="std", type=std_float, nargs="+", metavar="S",
                   help="std, one value or one per channel, 0..255 units (default: the model's "
                        "sidecar" + (", else 128)" if pycoral_flags else ")"))
    if layout:
        g.add_argument("--layout", choices=LAYOUTS, help="image layout of the model's input "
                                                         "(default: guessed from its shape)")
    else:
        g.set_defaults(layout=None)
    g.add_argument("--exact-decode", action="store_true",
                   help="decode every pixel of a JPEG much larger than the model's input (default: "
                        "the JPEG decoder's reduced scale, ~4x faster on camera photos)")
    return g


def preprocessing(args):
    """The preprocessing dict {size: [h, w], mean: [..], std: [..], layout} of the flags given
    (empty when none is). `args` is not changed."""
    from edge.errors import InputError

    pre = {}
    size = args.size
    if size:
        if len(size) not in (1, 2):
            raise InputError(f"--size takes H W or one number, not {len(size)} numbers")
        pre["size"] = list(size) * 2 if len(size) == 1 else list(size)
    for key in ("mean", "std"):
        values = args.mean if key == "mean" else args.std
        if values:
            if len(values) not in (1, 3, 4):
                raise InputError(f"--{key} takes one value or one per channel (3 or 4), "
                                 f"not {len(values)} values")
            pre[key] = list(values)
    if args.layout:
        pre["layout"] = args.layout
    # --exact-decode is process-wide (edge.preprocess.load_pixels serves every command's image
    # loads, and a source and its artefact must see the same pixels): set it from the flags of
    # this command, on or off.
    from edge.preprocess import set_exact_decode

    set_exact_decode(args.exact_decode)
    return pre


class _Deprecated(argparse.Action):
    """Stores like "store" and records one deprecation note (printed once the run starts)."""

    def __init__(self, *a, instead=None, **kw):
        self.instead = instead
        super().__init__(*a, **kw)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        notes = list(namespace._deprecated or [])   # None: set by add_input_shape
        shown = "[" + ",".join(map(str, values)) + "]" if isinstance(values, list) else values
        notes.append(f"note: {option_string} is deprecated, use {self.instead} {shown}")
        namespace._deprecated = notes


def add_input_shape(p, what="the model's input shape (PyTorch sources), e.g. 1 3 224 224"):
    """The old spelling `--input-shape D D ...`: kept as a deprecated alias of --input-shapes
    (one note when used). Every command that has it has --input-shapes too."""
    p.add_argument("--input-shape", type=dim_int, nargs="+", metavar="D", action=_Deprecated,
                   instead="--input-shapes",
                   help=f"deprecated spelling of --input-shapes [D,..]: {what}")
    p.set_defaults(_deprecated=None)   # the notes of the deprecated flags used (_Deprecated)


def input_shape(args):
    """The shape for sources that need one (PyTorch): --input-shapes when it names one input
    (bare or named), else the deprecated --input-shape tuple, else None."""
    shape = args.input_shape
    if shape:
        return tuple(shape)
    shapes = args.input_shapes
    if shapes:
        from converters.validation.signature import parse_input_shapes

        parsed = parse_input_shapes(shapes)
        if len(parsed) == 1:
            return tuple(next(iter(parsed.values())))
    return None


def add_data(p):
    """--inputs --samples --seed: the inputs a model is run on."""
    g = p.add_argument_group("input data")
    g.add_argument("--inputs", default="random", metavar="random|DIR",
                   help="'random' (seeded) or a folder of images (default random)")
    g.add_argument("--samples", type=count_int,
                   help="number of samples (default 10 random / 20 images)")
    g.add_argument("--seed", type=seed_int, default=0, help="random seed (default 0)")
    return g


def add_device(p, device=True, runtime=True, device_help="auto, cpu, usb, usb:N, pci, pci:N or :N"):
    """--device (the Edge TPU or the CPU) and --runtime (which TFLite interpreter)."""
    if device:
        p.add_argument("--device", default="auto", help=f"TFLite device: {device_help} (default auto)")
    if runtime:
        p.add_argument("--runtime", choices=TFLITE_RUNTIMES,
                       help="force one TFLite backend (default: the first installed)")


def add_model_loading(p, torch_model=True, trust_pickle=True, keras_unsafe=True):
    """--torch-model --trust-pickle --keras-unsafe: how far to trust a model file."""
    g = p.add_argument_group("loading models")
    if torch_model:
        g.add_argument("--torch-model", metavar="MODULE:FACTORY",
                       help="PyTorch state dicts: a callable returning the nn.Module")
    if trust_pickle:
        g.add_argument("--trust-pickle", action="store_true",
                       help="allow TorchScript / .pt2 / full pickles (they can run code from the file)")
    if keras_unsafe:
        g.add_argument("--keras-unsafe", action="store_true",
                       help="allow Keras Lambda layers (they run code from the file)")
    g.set_defaults(**{k: v for k, v, given in (("torch_model", None, torch_model),
                                               ("trust_pickle", False, trust_pickle),
                                               ("keras_unsafe", False, keras_unsafe)) if not given})
    return g


def model_loading(args, overrides=True):
    """converters.options.ModelLoading from the groups a model is loaded with: loading models
    (add_model_loading), --input-shape(s) (add_input_shape, inputs.add_input_args) and, with
    `overrides`, --input-shapes/--val-range/--data/--arg (inputs.overrides_from_args; --data
    is read then). InputError on a bad value."""
    from converters.options import ModelLoading

    shape = input_shape(args)
    given = None
    if overrides:
        from edgeport.cli.inputs import overrides_from_args

        given = overrides_from_args(args)
    return ModelLoading(torch_model=args.torch_model, trust_pickle=bool(args.trust_pickle),
                        keras_unsafe=bool(args.keras_unsafe), input_shape=shape, input_overrides=given)


def add_threads(p, several=False):
    if several:
        p.add_argument("--threads", type=threads_int, nargs="+", default=[None], metavar="N",
                       help="CPU threads; several values benchmark each (default: the runtime's choice)")
    else:
        p.add_argument("--threads", type=threads_int, metavar="N",
                       help="CPU threads for the interpreter (default: the runtime's choice)")



def add_judgement(p):
    """--atol --rtol --output-role, the roles' thresholds and --accept-unvalidated: how an
    artefact is judged. `validate` and `convert` share this group, so a conversion and a
    later `validate` on the same data reach the same verdict."""
    from converters.validation import roles

    g = p.add_argument_group("judgement (shared by convert and validate)")
    g.add_argument("--atol", action="append", metavar="[OUTPUT:]VALUE",
                   help="absolute tolerance (finite, >= 0), optionally per output (repeatable; default 1e-4)")
    g.add_argument("--rtol", action="append", metavar="[OUTPUT:]VALUE",
                   help="relative tolerance (finite, >= 0), optionally per output (repeatable; default 1e-3)")
    g.add_argument("--output-role", action="append", metavar="OUTPUT:ROLE",
                   help="what an output is, instead of the inferred role (repeatable): "
                        + ", ".join(roles.ROLES))
    g.add_argument("--min-top1", type=fraction, default=0.95,
                   help="class scores: least fraction of samples with the same top-1 (0..1; default 0.95)")
    g.add_argument("--min-cosine", type=cosine, default=0.95,
                   help="least mean cosine similarity of class, raw, dense outputs; least cosine "
                        "per sample of embeddings (-1..1; default 0.95)")
    for flag, default, what in (
            ("--min-recall", roles.MIN_RECALL, "detection: least fraction of the source's detections found"),
            ("--min-precision", roles.MIN_PRECISION, "detection: least fraction of detections that match the source's"),
            ("--score-threshold", roles.SCORE_THRESHOLD, "detection: score a detection needs"),
            ("--iou", roles.IOU, "detection: IoU at which two boxes match"),
            ("--label-threshold", roles.LABEL_THRESHOLD, "multi-label: probability that sets a label"),
            ("--min-label-agreement", roles.MIN_LABEL_AGREEMENT, "multi-label: least fraction of equal label decisions"),
            ("--min-f1", roles.MIN_F1, "multi-label: least F1 against the source's labels"),
            ("--min-pixel-agreement", roles.MIN_PIXEL_AGREEMENT, "dense maps: least fraction of equal pixels")):
        g.add_argument(flag, type=fraction, default=default, help=f"{what} (0..1; default {default:g})")
    g.add_argument("--max-range-error", type=non_negative_float, default=roles.MAX_RANGE_ERROR,
                   help="landmarks, sequences: largest mean error as a fraction of the source's "
                        f"range (>= 0; default {roles.MAX_RANGE_ERROR:g})")
    g.add_argument("--accept-unvalidated", action="store_true",
                   help="exit 0 although an artefact could not be validated by numbers "
                        "(structure only, no runtime or device here); it is still reported so")
    return g


def judgement(args, **extra):
    """Tolerances (converters.validation.comparator) from the judgement flags; `extra` sets
    the fields a command adds (check_stat, mode...). InputError on a bad value."""
    from converters.validation.comparator import Tolerances, parse_per_output
    from converters.validation.roles import parse_roles
    from edge.errors import InputError

    def per_output(values, flag, default):
        try:
            v = parse_per_output(values, checked(non_negative_float, flag), flag)
        except ValueError as e:
            raise InputError(str(e)) from None
        return default if v == {} else v

    try:
        output_roles = parse_roles(args.output_role) or None
    except ValueError as e:
        raise InputError(str(e)) from None
    thresholds = {"min_recall": args.min_recall, "min_precision": args.min_precision,
                  "score_threshold": args.score_threshold, "iou": args.iou,
                  "label_threshold": args.label_threshold,
                  "min_label_agreement": args.min_label_agreement, "min_f1": args.min_f1,
                  "min_pixel_agreement": args.min_pixel_agreement,
                  "max_range_error": args.max_range_error}
    return Tolerances(atol=per_output(args.atol, "--atol", Tolerances.atol),
                      rtol=per_output(args.rtol, "--rtol", Tolerances.rtol),
                      min_top1=args.min_top1, min_cosine=args.min_cosine,
                      scale_atol=not args.atol,   # a given --atol is used as it is
                      roles=output_roles, **thresholds, **extra)
