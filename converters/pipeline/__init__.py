"""Run conversions: detect the source, plan each target's route, run its hops, record each.

    result = convert_model("net.keras", ["onnx", "tflite-int8"], options, outdir="out")

Each hop is one registered conversion written through `atomic_output` to
`<outdir>/<stem><formats.OUTPUT_SUFFIX[fmt]>`, stamped with provenance in the format's own
metadata slot and in the sidecar `NAME.edgeport.json`, then (unless validate=False) checked
against the artefact it was made from by `converters.validation.validate.validate_pair`. Intermediates
are artefacts too (`_int8.tflite` before `_edgetpu.tflite`) and are reused across targets.
An existing output is kept unless `force`. Each target succeeds or fails on its own: the
others are still made, `Result.refused` holds one line per target that was not, and the
exit code is the worst of theirs (all refused: the first reason is raised).

`convert_folder` does the same for every model of a folder, in `jobs` processes, skipping
sources whose sha256 and options match the last run (state in `.edgeport-convert.json`).

One module per job, each importing only the ones before it:

    plan     targets, routes and the options they need, output names, the options record
    hop      one hop: convert, stamp, validate, then name the artefact (or keep an earlier one)
    model    one model to every target (convert_model, Result)
    folder   every model of a folder, in processes, with the skip state (convert_folder)

This package re-exports their public names, so `from converters.pipeline import X` and
`pipeline.X` keep working; patch a private helper in the module that defines it
(`converters.pipeline.hop._validate`).
"""

from converters.pipeline.folder import (
    STATE_FILE,
    STOP_GRACE_SECONDS,
    check_folder_plan,
    convert_folder,
    find_models,
    read_state,
    state_schema,
)
from converters.pipeline.hop import ARTEFACT_SHA, NOT_VALIDATED, Hop, quiet_frameworks
from converters.pipeline.model import Result, convert_model
from converters.pipeline.plan import (
    MAX_LABELS,
    NEED_FLAGS,
    calibration_digest,
    check_labels_fit,
    check_needs,
    open_source,
    options_record,
    output_path,
    parse_targets,
    plan_each,
    planned_outputs,
    stem_of,
)

__all__ = [
    "ARTEFACT_SHA", "MAX_LABELS", "NEED_FLAGS", "NOT_VALIDATED", "STATE_FILE", "STOP_GRACE_SECONDS",
    "Hop", "Result", "calibration_digest", "check_folder_plan", "check_labels_fit", "check_needs",
    "convert_folder", "convert_model", "find_models", "open_source", "options_record",
    "output_path", "parse_targets", "plan_each", "planned_outputs", "quiet_frameworks",
    "read_state", "state_schema", "stem_of",
]
