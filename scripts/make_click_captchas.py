"""Render click captchas for the character detector of the corpus: realistic data, never noise.

    python scripts/make_click_captchas.py [--out DIR] [--count N]

A click captcha is a photo with a few large characters drawn over it, each in its own colour,
size and tilt; ddddocr's detector (a YOLOX model) finds those characters. Each captcha here is
one of the photos in images/ (resized to 416 x 416, the detector's input) with four letters
or digits drawn with Pillow's built-in font, outlined, rotated up to 35 degrees, one in each
quarter of the image. The choices come from a seeded random generator, so the same command
writes the same captchas; no font or image is downloaded.

Default output: $EDGEPORT_CAPTCHAS or .cache/captchas/ in the checkout (gitignored).
Written atomically, one PNG per captcha.
"""

import argparse
import glob
import os
import random
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 416
GLYPHS = "ABCDEFHKMNPRSTUVWXYZ23456789"


def default_out():
    return os.environ.get("EDGEPORT_CAPTCHAS") or os.path.join(REPO, ".cache", "captchas")


def render(photo, seed):
    """One captcha: the photo with four characters drawn over it (a PIL image)."""
    from PIL import Image, ImageDraw, ImageFont

    rng = random.Random(seed)
    with Image.open(photo) as im:
        page = im.convert("RGB").resize((SIZE, SIZE), Image.LANCZOS)
    quarter = SIZE // 2
    for k in range(4):
        size = rng.randint(44, 64)
        try:
            font = ImageFont.load_default(size=size)   # Pillow >= 10.1: a scalable built-in font
        except TypeError:
            font = ImageFont.load_default()
        tile = Image.new("RGBA", (96, 96), (0, 0, 0, 0))
        colour = tuple(rng.randint(0, 255) for _ in range(3))
        ImageDraw.Draw(tile).text((18, 8), rng.choice(GLYPHS), font=font, fill=colour + (255,),
                                  stroke_width=2, stroke_fill=(255, 255, 255, 255))
        tile = tile.rotate(rng.uniform(-35, 35), resample=Image.BICUBIC)
        x = (k % 2) * quarter + rng.randint(8, quarter - 104)
        y = (k // 2) * quarter + rng.randint(8, quarter - 104)
        page.paste(tile, (x, y), tile)
    return page


def write_captchas(out, count=12):
    """Write `count` captchas (one per photo of images/, in name order) as captcha_NN.png."""
    photos = sorted(glob.glob(os.path.join(REPO, "images", "*.jpg")))[:count]
    os.makedirs(out, exist_ok=True)
    for i, photo in enumerate(photos):
        path = os.path.join(out, f"captcha_{i:02d}.png")
        tmp = path + ".tmp"
        render(photo, i).save(tmp, format="PNG")
        os.replace(tmp, path)
    return len(photos)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help="output folder (default $EDGEPORT_CAPTCHAS or .cache/captchas)")
    p.add_argument("--count", type=int, default=12, help="how many captchas (one per photo, at most 20)")
    args = p.parse_args(argv)
    out = args.out or default_out()
    n = write_captchas(out, args.count)
    print(f"{n} captchas in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
