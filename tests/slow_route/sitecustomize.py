"""Test-only: a slow stand-in for the TFLite -> ONNX conversion, in every process of a run.

tests/edge/test_cancel.py puts this folder on PYTHONPATH and sets EDGEPORT_TEST_SLOW_ROUTE, so the
command and every worker it spawns import it at startup (Python's sitecustomize hook); edgeport
itself has no test hook. Sources named `slow*` write a partial temp, leave a marker file in
$EDGEPORT_TEST_SLOW_ROUTE and sleep; the others get a tiny real ONNX model at once.
"""

import os

if os.environ.get("EDGEPORT_TEST_SLOW_ROUTE"):
    import dataclasses
    import shutil
    import time

    from converters import formats, registry

    registry.load_registry()
    _KEY = (formats.TFLITE, formats.ONNX)

    def _stand_in(source, output_path, options):
        marks = os.environ["EDGEPORT_TEST_SLOW_ROUTE"]
        if os.path.basename(source.path).startswith("slow"):
            with open(output_path, "wb") as f:
                f.write(b"partial")
            open(os.path.join(marks, f"started-{source.name}-{os.getpid()}"), "w").close()
            time.sleep(120)
        shutil.copyfile(os.path.join(marks, "tiny.onnx"), output_path)
        return {}

    registry._REGISTRY[_KEY] = dataclasses.replace(registry._REGISTRY[_KEY], func=_stand_in)
