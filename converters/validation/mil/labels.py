"""Class labels of a Core ML spec: a classifier's label list, wherever the spec keeps it.

Shared by the Core ML runner and the reference executor; it reads protobuf fields only.
"""


def class_labels_of(spec):
    """Class labels of a Core ML spec (neural network, pipeline or ML program classifier)."""
    kind = spec.WhichOneof("Type")
    holders = []
    if kind in ("neuralNetworkClassifier", "pipelineClassifier", "treeEnsembleClassifier",
                "glmClassifier", "supportVectorClassifier"):
        holders.append(getattr(spec, kind))
    if kind == "pipelineClassifier":
        holders.extend(m for m in spec.pipelineClassifier.pipeline.models)
    if kind == "pipeline":
        holders.extend(spec.pipeline.models)
    for h in holders:
        if hasattr(h, "WhichOneof") and h.DESCRIPTOR.oneofs_by_name.get("ClassLabels"):
            which = h.WhichOneof("ClassLabels")
            if which == "stringClassLabels":
                return list(h.stringClassLabels.vector)
            if which == "int64ClassLabels":
                return [str(x) for x in h.int64ClassLabels.vector]
        if hasattr(h, "WhichOneof") and h.DESCRIPTOR.oneofs_by_name.get("Type"):
            found = class_labels_of(h)
            if found:
                return found
    if kind == "mlProgram" and spec.description.predictedFeatureName:
        return _mlprogram_class_labels(spec.mlProgram)
    return None


def _mlprogram_class_labels(program):
    """Labels of an ML program classifier: the `classes` argument of its `classify` op,
    an immediate list of string (or int) scalars, or the name of a const op holding them."""
    for function in program.functions.values():
        for block in function.block_specializations.values():
            consts = {op.outputs[0].name: op.attributes.get("val") for op in block.operations
                      if op.type == "const" and op.outputs}
            for op in block.operations:
                if op.type != "classify" or "classes" not in op.inputs:
                    continue
                arg = op.inputs["classes"].arguments[0]
                value = arg.value if arg.WhichOneof("binding") == "value" else consts.get(arg.name)
                if value is not None:
                    return _literal_strings(value)
    return None


def _literal_strings(value):
    imm = value.immediateValue
    if imm.WhichOneof("value") == "list":
        return [s for v in imm.list.values for s in _literal_strings(v)]
    t = imm.tensor
    kind = t.WhichOneof("value")
    if kind == "strings":
        return list(t.strings.values)
    if kind in ("ints", "longInts"):
        return [str(x) for x in getattr(t, kind).values]
    return []
