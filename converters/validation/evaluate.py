"""Top-1 / top-k accuracy of classifiers on a folder of labelled images (`edgeport eval`)."""

import os


def _norm(text):
    import re

    return re.sub(r"[\s_\-]+", " ", str(text).strip().lower()).strip()


def match_classes(folders, labels):
    """{folder name: class id} by label or synonym; raises InputError listing unmatched folders."""
    from edge.errors import InputError

    index = {}
    for i, line in labels.items():
        for syn in [line, *str(line).split(",")]:
            index.setdefault(_norm(syn), i)
    out, missing = {}, []
    for f in folders:
        key = _norm(f)
        if key in index:
            out[f] = index[key]
        elif key.isdigit() and int(key) in labels:
            out[f] = int(key)
        else:
            missing.append(f)
    if missing:
        raise InputError(f"class folder(s) {', '.join(missing[:10])} match no label",
                         "name each folder after a label line (or one of its comma-separated synonyms)")
    return out


def dataset(root, limit=None):
    """[(image path, folder name)] of a folder of class folders."""
    import os

    from edge.errors import InputError

    if not os.path.isdir(root):
        raise InputError(f"--images {root} is not a folder")
    folders = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))
                     and not d.startswith("."))
    if not folders:
        raise InputError(f"{root} holds no class folders", "put each class's images in a folder named after it")
    items = []
    for d in folders:
        from edge.preprocess import image_files

        files = image_files(os.path.join(root, d))  # hidden and non-regular entries left out
        items += [(f, d) for f in files[:limit]]
    if not items:
        raise InputError(f"the class folders of {root} hold no images")
    return folders, items


def evaluate(model_path, items, classes, k, preprocessing=None, device="auto", runtime=None, loading=None):
    """(top-1 hits, top-k hits, n, mean ms) of one model on [(image, folder)].

    `preprocessing` ({size, mean, std, layout}, any subset) overrides the model's own spec;
    `loading` (converters.options.ModelLoading, as convert and validate take it) says how far
    to trust the file and its `input_overrides` fix open input dimensions.
    """
    import numpy as np

    from converters.artefact import open_model
    from converters.options import ModelLoading
    from converters.validation.data import DataSource, resolve_preprocessing
    from converters.validation.runners import runner_for
    from converters.validation.runners.coreml import is_image_input
    from converters.validation.signature import resolve
    from edge.classify import decode_noise_call

    loading = loading or ModelLoading()
    overrides = loading.input_overrides
    art = open_model(model_path, loading.torch_model)
    r = runner_for(art, device=device, runtime=runtime, torch_model=loading.torch_model,
                   input_shape=tuple(loading.input_shape) if loading.input_shape else None,
                   trust_pickle=loading.trust_pickle, keras_unsafe=loading.keras_unsafe,
                   overrides=overrides)
    r.activate()
    try:
        pre = dict(art.preprocessing, **(preprocessing or {}))
        sig = resolve(r.input_metadata(), overrides, image_size=pre.get("size"))
        metas = sig.metas
        if sig.placeholders:  # accuracy on a size nobody chose: say so
            import sys

            for note in sig.notes:
                print(f"warning: {os.path.basename(model_path)}: {note}", file=sys.stderr)
        spec = resolve_preprocessing(pre, metas[0], True)
        source = DataSource(metas, [], spec, [p for p, _ in items], samples=len(items),
                            keep_variants=True)  # confirm drafted photos as classify does
        raw = {m.name for m in metas if is_image_input(r, m.name)}
        top1 = topk = 0
        folder_of, used = dict(items), 0

        def scores_of(sample):
            out = r.infer(source.feed(sample, metas, spec, raw))
            return next(iter(out.values())).reshape(-1).astype(np.float64)

        # decoded ahead on worker threads, in order; a damaged image is skipped with a warning
        for path, sample in source.iter_image_samples():
            folder = folder_of[path]
            used += 1
            scores = scores_of(sample)
            variant = source.pop_variant(path)
            if variant is not None and decode_noise_call(scores, scores_of(variant)):
                # the fast decode's own noise may decide it: the exact decode's answer (as classify)
                scores = scores_of(source._image_sample(path, exact=True))
            order = np.argsort(-scores, kind="stable")
            want = classes[folder]
            top1 += int(order[0] == want)
            topk += int(want in order[:k])
        ms = 1000.0 * float(np.mean(r.inference_times)) if r.inference_times else None
        return top1, topk, used, ms
    finally:
        r.deactivate()

