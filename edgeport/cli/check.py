"""`check`: is a model file well formed and loadable? (ONNX, ORT, TFLite, Core ML, TF, PyTorch)"""

HELP = "check that a model is well formed and loads (onnx.checker, TFLite structure, ...)"


DESCRIPTION = """Check a model without comparing it to anything:
  ONNX     onnx.checker full check, strict shape inference, then an onnxruntime session
  ORT      loads in onnxruntime
  TFLite   structure (opcodes known, tensor indices in range, buffers in bounds, inputs and
           outputs present, custom ops listed), then tensors allocated by the interpreter
           (a model compiled for the Edge TPU is allocated only when an Edge TPU is attached)
  Core ML  spec readable, inputs/outputs/metadata/labels (compiled and loaded on macOS)
  Keras, SavedModel, TorchScript, .pt2: load and list inputs and outputs
--graph prints the graph readably.

exit status: 0 every check passed, 1 a check failed, 2 a usage or load error.

examples:
  edgeport check model.onnx --graph
  edgeport check model_int8.tflite --json"""


def configure(p):
    from edgeport.cli.args import add_device, add_input_shape, add_json, add_model_loading

    p.add_argument("model", help="the model to check")
    p.add_argument("--graph", action="store_true", help="print the graph (nodes, inputs, outputs)")
    add_json(p)
    add_model_loading(p, torch_model=False)
    add_input_shape(p, "PyTorch: the input shape, e.g. 1 3 224 224")
    from edgeport.cli.inputs import add_input_shapes

    add_input_shapes(p)
    add_device(p, device=False)


def files(args, run):
    """Reads the model; writes nothing."""
    run.input(args.model, "model", sidecar=True)

def run(args):
    import converters.validation.check as _lib
    from edgeport.cli.args import input_shape
    from edgeport.cli.output import emit_json

    c = _lib.check(args.model, args.runtime, args.trust_pickle, args.keras_unsafe, input_shape(args))
    code = 0 if c.passed else 1
    if args.json:
        info = {k: v for k, v in c.info.items() if k != "model"}
        return emit_json("check", code, model=args.model, passed=c.passed, **info,
                         checks=[{"check": n, "ok": ok, "detail": d} for n, ok, d in c.items],
                         **({"graph": c.graph} if args.graph else {}))
    print(f"{args.model}: {c.info.get('format')}"
          + "".join(f", {k} {v}" for k, v in c.info.items()
                    if k in ("ir_version", "producer", "opsets", "nodes", "ops") and v != ""))
    for n, ok, d in c.items:
        print(f"  {'ok  ' if ok else 'FAIL'} {n}: {d}")
    for k in ("custom_ops", "allocation", "note"):
        if c.info.get(k):
            print(f"  {k.replace('_', ' ')}: {c.info[k]}")
    if args.graph:
        print("graph:")
        for line in c.graph:
            print(f"  {line}")
    print("PASSED" if c.passed else "FAILED")
    return code
