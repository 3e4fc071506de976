"""Rebuild images/ from photos that ship inside PyPI packages (no download).

    python scripts/collect_images.py      # needs scikit-image, matplotlib, scikit-learn (the 'dev' extra)

Each photo is resized so its longer side is at most 480 px and saved as JPEG (quality 92).
Sources and licenses are listed in images/README.md.
"""
import os
import sys

import numpy as np
from PIL import Image

MAX_SIDE = 480
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "images")


def skimage_photos():
    import skimage.data as d

    left, right, _ = d.stereo_motorcycle()
    return {
        "astronaut": d.astronaut(), "chelsea": d.chelsea(), "coffee": d.coffee(), "rocket": d.rocket(),
        "motorcycle_left": left, "motorcycle_right": right, "camera": d.camera(), "coins": d.coins(),
        "clock": d.clock(), "brick": d.brick(), "grass": d.grass(), "gravel": d.gravel(),
        "hubble_deep_field": d.hubble_deep_field(), "retina": d.retina(),
        "immunohistochemistry": d.immunohistochemistry(), "moon": d.moon(), "cell": d.cell(),
    }


def matplotlib_photos():
    from matplotlib import cbook

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        return {"grace_hopper": np.asarray(Image.open(f).convert("RGB"))}


def sklearn_photos():
    """china.jpg and flower.jpg of scikit-learn (sklearn/datasets/images, CC BY 2.0)."""
    from importlib import resources

    folder = resources.files("sklearn.datasets") / "images"
    out = {}
    for name in ("china", "flower"):
        with (folder / f"{name}.jpg").open("rb") as f:
            out[name] = np.asarray(Image.open(f).convert("RGB"))
    return out


# Not taken, from the mahotas wheel (mahotas/demos/data): DepartmentStore.jpg is a "Where's
# Wally" illustration with no license given, luispedro.jpg a portrait with no license of its
# own (only the package's MIT line in its metadata), lena.jpg excluded on purpose.


def main():
    os.makedirs(OUT, exist_ok=True)
    photos = {**skimage_photos(), **matplotlib_photos(), **sklearn_photos()}
    for name, arr in sorted(photos.items()):
        im = Image.fromarray(np.asarray(arr))
        im.thumbnail((MAX_SIDE, MAX_SIDE), Image.LANCZOS)
        path = os.path.join(OUT, f"{name}.jpg")
        im.save(path, quality=92)
        print(f"{path}: {im.size[0]}x{im.size[1]} {im.mode}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
