"""The model-input flags shared by validate, bench, check and convert (Polygraphy's spelling):

    --input-shapes name:[1,3,640,640] other:[1,512]   (a bare [..] for a single-input model)
    --val-range name:[lo,hi]                          (a bare [lo,hi] for every input)
    --data FILE.npz                                   (arrays keyed by input name)
    --arg sr=16000                                    (TorchScript non-tensor arguments)
    --fix sr=16000 w=[1,2]                            (convert, validate: an input made a constant)

add_input_args(p) adds them (add_fix_arg(group) adds --fix); overrides_from_args(args) returns a
converters.validation.signature.InputOverrides (or None when none was given).
"""


def add_input_shapes(p):
    """--input-shapes alone (commands that take no data, e.g. check)."""
    p.add_argument("--input-shapes", nargs="+", metavar="[NAME:][D,..]",
                   help="shape per input, e.g. x:[1,3,640,640] sr:[] (bare [..] for one input)")


def add_input_args(p):
    g = p.add_argument_group(
        "model inputs (open dimensions are never silently 1: set them here, or the run says "
        "which placeholder it used)")
    add_input_shapes(g)
    g.add_argument("--val-range", nargs="+", metavar="[NAME:][LO,HI]",
                   help="random values in [LO,HI] per input, e.g. sr:[16000,16000]")
    g.add_argument("--data", metavar="FILE.npz",
                   help="input arrays keyed by input name (one sample, or a stack along axis 0); "
                        "convert also calibrates full-int8 TFLite on them")
    g.add_argument("--arg", nargs="+", metavar="NAME=VALUE",
                   help="TorchScript: a value for a non-tensor forward argument, e.g. sr=16000")
    g.set_defaults(fix=None)   # --fix only where add_fix_arg adds it
    return g


def add_fix_arg(g):
    """--fix, for the commands that turn an input into a constant (convert) or feed the
    source the value a converted model was made with (validate)."""
    g.add_argument("--fix", nargs="+", metavar="NAME=VALUE",
                   help="turn input NAME into a constant (a number or a JSON list, in the input's "
                        "dtype): the graph folds what becomes constant; validation feeds the "
                        "source that value; e.g. sr=16000")
    return g


def overrides_from_args(args):
    from converters.validation.signature import InputOverrides

    shapes, ranges, data, values, fixed = args.input_shapes, args.val_range, args.data, args.arg, args.fix
    if not (shapes or ranges or data or values or fixed):
        return None
    return InputOverrides.parse(shapes, ranges, data, values, fixed)


def declare_inputs(args, run):
    """Declare the files these flags read (--data) on an edge.run.Run."""
    run.input(args.data, "--data file")
