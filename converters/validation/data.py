"""Inputs for validation: seeded random values or real images, the same sample for every runner.

A sample is held once in a canonical form and adapted to each runner's own input:
  - an image input holds HWC uint8 pixels; each runner gets them through
    `edge.preprocess.Preprocessor` with the preprocessing spec (resize, (pixel - mean) / std,
    quantized with that input's scale/zero point, laid out NHWC or NCHW);
  - any other input holds values in the source's layout; a runner whose input is the
    transposed layout gets them transposed, an integer-quantized input gets them quantized.
Random values respect each input's dtype and range: pixels 0..255 for image inputs with a
preprocessing spec, the real range of a quantized input, [0, 1) for other float inputs.
"""

import hashlib
import os
import warnings

import numpy as np

from edge.errors import InputError
from edge.preprocess import InputSpec, Preprocessor, decode_pixels, decode_variants, guess_layout, list_images
from edge.random_inputs import generator, random_pixels, random_values
from edge.tensors import quantize

PIXELS = "pixels"
VALUES = "values"


class Canonical:
    """One input of one sample: kind PIXELS (HWC uint8) or VALUES (array in `shape`)."""

    __slots__ = ("kind", "array", "layout")

    def __init__(self, kind, array, layout=None):
        self.kind, self.array, self.layout = kind, array, layout


def fingerprint(sample):
    """sha256 (hex, 16 chars) of a sample's canonical inputs, to match saved outputs."""
    h = hashlib.sha256()
    for c in sample:
        a = np.ascontiguousarray(c.array)
        h.update(c.kind.encode())
        h.update(str(a.dtype).encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def _fixed_shape(shape, fallback=1, name="input"):
    from edge.files import check_tensor_size

    out = tuple(fallback if d is None or (isinstance(d, int) and d < 0) else int(d) for d in shape)
    check_tensor_size("model", name, out, 8)  # no 8 TB random input for a damaged shape
    return out


def _pixels(im):
    """A decoded image as a pixels sample (HWC uint8; a grey image gets its channel axis)."""
    arr = np.asarray(im, dtype=np.uint8)
    return Canonical(PIXELS, arr[:, :, None] if arr.ndim == 2 else arr)


def _image_geometry(meta):
    """(h, w, c) of a 4-D image input, or None."""
    shape = _fixed_shape(meta.shape)
    layout = meta.layout or guess_layout(shape)
    if len(shape) != 4 or layout is None:
        return None
    return (shape[1], shape[2], shape[3]) if layout == "NHWC" else (shape[2], shape[3], shape[1])


def match_inputs(reference_metas, metas):
    """For each of `metas`, the index of the reference input it takes: by name, else by the
    name without TensorFlow's signature mangling ('serving_default_state:0' is 'state', as
    onnx2tf and the TFLite converter name inputs, in an order of their own), else position."""
    from converters.quantize.calibration import _bare_name

    ref_names = [m.name for m in reference_metas]
    bare = [_bare_name(n) for n in ref_names]
    out = []
    for i, m in enumerate(metas):
        if m.name in ref_names:
            out.append(ref_names.index(m.name))
        elif bare.count(_bare_name(m.name)) == 1:
            out.append(bare.index(_bare_name(m.name)))
        elif i < len(reference_metas):
            out.append(i)
        else:
            raise InputError(f"input '{m.name}' has no counterpart in the source model",
                             "the models take different inputs")
    return out


class DataSource:
    """Seeded random or image samples shaped by the source model's inputs.

    Args:
      reference: [TensorMeta] of the source model's inputs.
      others: list of [TensorMeta] of the other models' inputs (for quantized ranges).
      spec: resolved preprocessing dict (size, layout, mean, std, channels) or None.
      images: list of image paths, or None for random inputs.
      samples: how many samples (random), or at most how many images.
      seed: random seed.
      keep_variants: keep a drafted photo's second resampling, to confirm it as classify
        does (eval).
    """

    def __init__(self, reference, others=(), spec=None, images=None, samples=8, seed=0,
                 overrides=None, keep_variants=False):
        self.keep_variants = keep_variants
        self.reference = list(reference)
        self.others = [list(o) for o in others]
        self.spec = spec
        self.images = list(images) if images else None
        self.overrides = overrides
        self.data = dict(overrides.data) if overrides is not None and overrides.data else {}
        if samples is None:  # every sample of --data
            from converters.validation.signature import data_samples

            samples = max(len(data_samples(self.data[m.name], m.shape))
                          for m in self.reference if m.name in self.data) if self.data else 8
        self.count = int(samples)
        self.seed = int(seed)
        self.kinds = [self._kind(i, m) for i, m in enumerate(self.reference)]
        if self.images is not None and PIXELS not in self.kinds:
            raise InputError("--inputs DIR needs a model with an image input (NHWC or NCHW, "
                             "1 or 3 channels)")

    @property
    def description(self):
        if self.images is not None:
            return f"{min(len(self.images), self.count)} images"
        if self.data:
            path = os.path.basename(self.overrides.data_path or "--data")
            rest = [m.name for m in self.reference if m.name not in self.data]
            return (f"{self.count} samples from {path}"
                    + (f" (random {', '.join(rest)}, seed {self.seed})" if rest else ""))
        ranged = ""
        if self.overrides is not None and self.overrides.ranges:
            ranged = ", ranges " + ", ".join(f"{n or '*'}:[{lo:g},{hi:g}]"
                                             for n, (lo, hi) in self.overrides.ranges.items())
        return f"{self.count} random samples (seed {self.seed}{ranged})"

    def _kind(self, i, meta):
        if meta.name in self.data:
            return VALUES
        geo = _image_geometry(meta)
        if geo is None or geo[2] not in (1, 3):
            return VALUES
        if self.images is not None or self.spec:
            return PIXELS
        return VALUES

    def _quant_range(self, i):
        for metas in self.others:
            if i < len(metas):
                m = metas[i]
                if m.scale and np.issubdtype(m.dtype, np.integer):
                    info = np.iinfo(m.dtype)
                    return m.scale * (info.min - m.zero_point), m.scale * (info.max - m.zero_point)
        return None

    def _pixels_size(self, meta):
        if self.spec and self.spec.get("size"):
            h, w = self.spec["size"]
            return int(h), int(w), int(self.spec.get("channels", 3))
        h, w, c = _image_geometry(meta)
        return h, w, c

    def samples(self):
        """The list of samples; each sample is a list of Canonical, one per reference input."""
        if self.images is not None:
            return [s for _, s in self.image_samples()]
        rng = generator(self.seed)
        out = [[self._random(rng, i, m) for i, m in enumerate(self.reference)]
               for _ in range(self.count)]
        if self.data:
            from converters.validation.signature import data_samples

            for i, m in enumerate(self.reference):
                if m.name in self.data:
                    given = data_samples(self.data[m.name], m.shape)
                    for k, sample in enumerate(out):
                        x = np.asarray(given[k % len(given)])
                        if x.dtype == np.float64 and np.issubdtype(m.dtype, np.floating):
                            x = x.astype(m.dtype)
                        sample[i] = Canonical(VALUES, x, m.layout)
        return out

    def iter_image_samples(self):
        """[(image path, sample)] one at a time, in order: images decode on worker threads
        ahead of the consumer (edge.pipeline.decode_ahead, bounded), so a large folder is never
        all in memory; a damaged image is skipped with a warning, and only when none can be
        read is it an error (as edge.preprocess.readable_images)."""
        import sys

        from edge.errors import InputError
        from edge.pipeline import decode_ahead

        read = skipped = 0
        for path, sample, error in decode_ahead(self.images[: self.count], self._image_sample):
            if error is not None:
                if not isinstance(error, InputError):
                    raise error
                skipped += 1
                print(f"warning: skipped {error}", file=sys.stderr)
                continue
            read += 1
            yield path, sample
        if not read and skipped:
            raise InputError(f"none of the {skipped} images could be read (each is named above)",
                             "pass a folder of readable JPEG, PNG or BMP images")

    def image_samples(self):
        """[(image path, sample)] of the folder's images that can be read (at most `count`);
        a damaged image is skipped with a warning (edge.preprocess.readable_images)."""
        from edge.preprocess import readable_images

        if getattr(self, "_image_samples", None) is None:
            self._image_samples = readable_images(self.images[: self.count], self._image_sample)
        return self._image_samples

    def _image_sample(self, path, exact=None):
        """The sample of one image; a path decoded on the fast path (draft) is added to
        `self.drafted`. With `keep_variants` set (eval), a drafted image's second resampling of
        the same draft (edge.preprocess.decode_variants) is kept until pop_variant takes it:
        eval confirms a photo with an exact decode when the two answers differ, as classify
        does (edge.classify.decode_noise_call)."""
        out, variants = [], []
        for kind, m in zip(self.kinds, self.reference):
            if kind != PIXELS:
                raise InputError(f"input '{m.name}' is not an image; --inputs DIR needs models "
                                 "whose inputs are all images")
            h, w, c = self._pixels_size(m)
            if exact is None and self.keep_variants:
                im, variant = decode_variants(path, (w, h), c)
                drafted = variant is not None
                variants.append(variant)
            else:
                im, drafted = decode_pixels(path, (w, h), c, exact)
            if drafted:
                self.__dict__.setdefault("drafted", set()).add(path)
            out.append(_pixels(im))
        if variants and all(v is not None for v in variants):
            self.__dict__.setdefault("_variants", {})[path] = [_pixels(v) for v in variants]
        return out

    def pop_variant(self, path):
        """The sample of `path`'s second resampling (kept by _image_sample with keep_variants),
        or None when it was not drafted; taken once, so a folder's variants never pile up."""
        return self.__dict__.get("_variants", {}).pop(path, None)

    def _random(self, rng, i, m):
        if self.overrides is not None and m.name in (self.overrides.fixed or {}):
            # --fix: the value the converted model was made with (it has no such input)
            shape = _fixed_shape(m.shape, name=m.name)
            return Canonical(VALUES, self.overrides.fixed_for(m.name, shape, m.dtype), m.layout)
        if self.kinds[i] == PIXELS:
            h, w, c = self._pixels_size(m)
            return Canonical(PIXELS, random_pixels(rng, h, w, c))
        shape = _fixed_shape(m.shape, name=m.name)
        dt = m.dtype
        rng_range = self.overrides.range_for(m.name) if self.overrides is not None else None
        if rng_range is not None:
            lo, hi = rng_range
            if np.issubdtype(dt, np.integer) and m.scale:  # a quantized input: real values
                return Canonical(VALUES, random_values(rng, shape, np.float32, lo, hi), m.layout)
            return Canonical(VALUES, random_values(rng, shape, dt, lo, hi), m.layout)
        if dt == np.bool_ or (np.issubdtype(dt, np.integer) and not m.scale):
            return Canonical(VALUES, random_values(rng, shape, dt), m.layout)   # 0/1, 0..9
        lo, hi = (0.0, 1.0)
        q = self._quant_range(i) if not m.scale else (
            m.scale * (np.iinfo(dt).min - m.zero_point), m.scale * (np.iinfo(dt).max - m.zero_point))
        if q is not None:
            lo, hi = q
        return Canonical(VALUES, random_values(rng, shape, np.float32, lo, hi), m.layout)

    # -- per runner -----------------------------------------------------------------------
    def feed(self, sample, metas, spec=None, raw_pixel_inputs=()):
        """{input name: array} for a runner with inputs `metas`.

        Args:
          spec: that runner's own preprocessing spec (its sidecar), else the shared one.
          raw_pixel_inputs: names of inputs that take 0..255 pixels as they are (Core ML
            image inputs), laid out NCHW float32.
        """
        spec = spec or self.spec or {}
        feed = {}
        for m, ref_i in zip(metas, match_inputs(self.reference, metas)):
            c = sample[ref_i]
            ref = self.reference[ref_i]
            if any(d is None for d in m.shape) and len(m.shape) == len(ref.shape):
                # this runner's open dims take the resolved shape of the source's input
                filled = tuple(r if d is None else d for d, r in zip(m.shape, ref.shape))
                m = m._replace(shape=filled,
                               layout=ref.layout if filled == tuple(ref.shape) else m.layout)
            if c.kind == PIXELS:
                feed[m.name] = self._pixels_to(c.array, m, spec, m.name in raw_pixel_inputs)
            else:
                feed[m.name] = self._values_to(c.array, self.reference[ref_i], m)
        return feed

    @staticmethod
    def _pixels_to(hwc, m, spec, raw):
        h, w, c = hwc.shape
        shape = _fixed_shape(m.shape, name=m.name)
        layout = m.layout or guess_layout(shape) or "NHWC"
        if raw:
            x = hwc.astype(np.float32).transpose(2, 0, 1)[None]
            return x if layout == "NCHW" else x.transpose(0, 2, 3, 1)
        full = (1, h, w, c) if layout == "NHWC" else (1, c, h, w)
        ispec = InputSpec(0, m.name, full, np.dtype(m.dtype), layout, h, w, c, m.scale, m.zero_point)
        pre = Preprocessor(ispec, spec.get("mean", 127.5), spec.get("std", 127.5))
        return np.ascontiguousarray(pre(hwc))

    @staticmethod
    def _values_to(x, ref, m):
        target = tuple(d if d is not None else x.shape[i] if i < x.ndim else 1
                       for i, d in enumerate(m.shape))
        if target != x.shape and x.ndim == 4 and len(target) == 4:
            if (x.shape[0], x.shape[2], x.shape[3], x.shape[1]) == target:
                x = x.transpose(0, 2, 3, 1)
            elif (x.shape[0], x.shape[3], x.shape[1], x.shape[2]) == target:
                x = x.transpose(0, 3, 1, 2)
        if x.shape != target and x.size == int(np.prod(target)):
            x = x.reshape(target)
        dt = np.dtype(m.dtype)
        if np.issubdtype(dt, np.integer) and m.scale and not np.issubdtype(x.dtype, np.integer):
            x = quantize(x, m.scale, m.zero_point, dt)
        return np.ascontiguousarray(x.astype(dt, copy=False))


def image_files(folder, count=None):
    """Image files of a folder (sorted), at most `count`; InputError when there are none."""
    if not os.path.isdir(folder):
        raise InputError(f"--inputs {folder} is neither 'random' nor a folder of images")
    files = list_images([folder])
    return files[:count] if count else files


def resolve_preprocessing(spec, meta, images_given):
    """A complete preprocessing spec for an image input, or None for non-image inputs."""
    from converters.quantize.calibration import resolve_spec

    if _image_geometry(meta) is None:
        return None
    if not spec and not images_given:
        return None
    if not spec or "mean" not in spec or "std" not in spec:
        warnings.warn("no preprocessing spec (mean/std) recorded for the model: using "
                      "mean 127.5, std 127.5", stacklevel=2)
    shape = _fixed_shape(meta.shape)
    spec = dict(spec or {})
    if meta.layout:  # the spec's layout is its own model's; this input's shape decides here
        spec["layout"] = meta.layout
    return resolve_spec(spec, shape, meta.layout)
