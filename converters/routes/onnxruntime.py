"""ONNX -> ORT (ONNX Runtime's flatbuffer format), through onnxruntime.tools.

Writes `<stem>.ort` and, beside it, `<stem>.required_operators.config`: the operator list
a reduced ONNX Runtime build (`build.py --include_ops_by_config`) needs for this model.
"""

import contextlib
import io
import os
import shutil
import tempfile

from converters import formats
from converters.registry import conversion
from edge.errors import EdgeportError, InputError, require

STYLES = ("Fixed", "Runtime")
PLATFORMS = ("arm", "amd64")


def _tools():
    return require("onnxruntime.tools.convert_onnx_models_to_ort", "convert", "conversion to ORT")


@conversion(formats.ONNX, formats.ORT)
def onnx_to_ort(source, output_path, options):
    import onnx

    tool = _tools()
    style = (options.ort_optimization or "Fixed").capitalize()
    if style not in STYLES:
        raise InputError(f"--ort-optimization must be one of {', '.join(STYLES)}, not {style}")
    platform = options.target_platform
    if platform and platform not in PLATFORMS:
        raise InputError(f"--target-platform must be one of {', '.join(PLATFORMS)}, not {platform}")
    out_dir = os.path.dirname(os.fspath(output_path))
    stem = os.path.basename(os.fspath(output_path))[:-len(".ort")]
    work = tempfile.mkdtemp(prefix=".ort-", dir=out_dir)
    try:
        model = formats.load_onnx(source.path)
        block = options.provenance
        if block:  # ORT keeps metadata_props: stamp the ORT model with its own provenance
            from converters.metadata import set_onnx_props

            set_onnx_props(model, block)
        onnx_copy = os.path.join(work, stem + ".onnx")
        onnx.save(model, onnx_copy)
        options.progress(f"onnxruntime.tools: {style} optimization"
                         + (f", target platform {platform}" if platform else
                            ", platform-neutral (no --target-platform: the .ort lacks the "
                            "layout optimizations ONNX Runtime applies to a .onnx at load time; "
                            "docs/peers.md measures it 1.3-2.2x slower than with amd64 on x86)"))
        log = io.StringIO()
        try:
            with contextlib.redirect_stdout(log):
                tool.convert_onnx_models_to_ort(
                    __import__("pathlib").Path(onnx_copy), output_dir=None,
                    optimization_styles=[tool.OptimizationStyle[style]],
                    target_platform=platform)
        except Exception as e:
            raise EdgeportError(f"onnxruntime could not convert {source.name} to ORT: {e}",
                                log.getvalue().strip().splitlines()[-1] if log.getvalue().strip() else None) from None
        suffix = ".with_runtime_opt" if style == "Runtime" else ""
        produced = os.path.join(work, f"{stem}{suffix}.ort")
        config = os.path.join(work, f"{stem}.required_operators{suffix}.config")
        if not os.path.exists(produced):
            raise EdgeportError(f"onnxruntime wrote no ORT model for {source.name}", log.getvalue()[-300:])
        os.replace(produced, output_path)
        companions = []
        if os.path.exists(config):
            name = f"{stem}.required_operators.config"
            os.replace(config, os.path.join(out_dir, name))
            companions.append(name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    from converters.artefact import package_versions

    return {"versions": package_versions("onnxruntime", "onnx"), "ort_optimization": style,
            "target_platform": platform, "companions": companions}
