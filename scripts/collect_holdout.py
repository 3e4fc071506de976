"""Rebuild images/holdout/: real photos from Debian packages, held out from calibration.

Used to measure how often a quantized model agrees with its float source on photos that
calibration never saw. Maintainer script, not run in CI:

    python scripts/collect_holdout.py [WORKDIR]    # WORKDIR default /tmp/debimg

For each package below it uses WORKDIR/x_<package>/ if already extracted, else
WORKDIR/<package>_<version>_all.deb, else runs `apt-get download <package>=<version>`; it
then extracts with `dpkg-deb -x` (nothing is installed).

Inclusion rule, fixed before looking at any model output and applied to every file of the
chosen sources (no model is run to choose, filter or rank photos):
  * sources, chosen for license and for being object-centred photos: the gcompris activities
    explore_farm_animals, explore_world_animals, erase, explore_world_music and
    explore_monuments (each image's
    author, license and origin are in the activity's README shipped in the same .rcc), and
    mate-backgrounds nature/ (authors and license in its debian/copyright);
  * every image there is taken unless it has transparency (a cut-out), its short side is
    under 200 px, or it is a near-duplicate (same 8x8 difference hash within 4 bits) of one
    already taken or of a calibration photo in images/*.jpg.
Saved as RGB JPEG, longer side <= 480 px (Lanczos), quality 92. See images/holdout/README.md
for the sources that were looked at and left out, and why.
"""
import fnmatch
import io
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "images" / "holdout"
PACKAGES = {"gcompris-qt-data": "3.1-2", "mate-backgrounds": "1.26.0-1"}
GCOMPRIS_RCC = "usr/share/gcompris-qt/rcc"
# activity -> short name used in file names
GCOMPRIS_ACTIVITIES = {"explore_farm_animals": "farm", "explore_world_animals": "world",
                       "erase": "erase", "explore_world_music": "music",
                       "explore_monuments": "monument"}
# file names misspelled in a gcompris README: actual name -> name the README credits
README_TYPOS = {"germany/aulaPalatina.webp": "germany/audaPalatina.webp"}
MATE_DIR = "usr/share/backgrounds/mate"
MATE_COPYRIGHT = "usr/share/doc/mate-backgrounds/copyright"
MAX_SIDE, MIN_SHORT, QUALITY = 480, 200, 92


def die(msg):
    sys.exit(f"collect_holdout: {msg}")


def extracted(pkg, version, work):
    dest = work / f"x_{pkg}"
    if dest.is_dir():
        return dest
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            die(f"'{tool}' not found: this script needs Debian's apt-get and dpkg-deb")
    deb = work / f"{pkg}_{version}_all.deb"
    if not deb.exists():
        subprocess.run(["apt-get", "download", f"{pkg}={version}"], cwd=work, check=True)
    subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], check=True)
    return dest


def rcc_entries(blob):
    """Yield (path, bytes) for every file in a Qt binary resource (.rcc) file."""
    if blob[:4] != b"qres":
        raise ValueError("not a Qt rcc file")
    version, tree, data, names = struct.unpack(">4I", blob[4:20])
    node_size = 22 if version >= 2 else 14  # version 2 added an 8-byte mtime per node

    def name(off):
        (n,) = struct.unpack(">H", blob[names + off:names + off + 2])  # then a 4-byte hash
        return blob[names + off + 6:names + off + 6 + 2 * n].decode("utf-16-be")

    def walk(index, prefix):
        base = tree + index * node_size
        name_off, flags = struct.unpack(">IH", blob[base:base + 6])
        path = f"{prefix}/{name(name_off)}" if index else ""
        if flags & 2:  # directory: child count, first child index
            count, first = struct.unpack(">II", blob[base + 6:base + 14])
            for child in range(first, first + count):
                yield from walk(child, path)
            return
        (data_off,) = struct.unpack(">I", blob[base + 10:base + 14])  # after country, lang
        (size,) = struct.unpack(">I", blob[data + data_off:data + data_off + 4])
        raw = blob[data + data_off + 4:data + data_off + 4 + size]
        if flags & 1:  # zlib, after a 4-byte uncompressed length
            raw = zlib.decompress(raw[4:])
        elif flags & 4:  # zstd (newer Qt)
            try:
                import zstandard
            except ImportError:
                die("this .rcc uses zstd: pip install zstandard")
            raw = zstandard.ZstdDecompressor().decompress(raw)
        yield path, raw

    yield from walk(0, "")


def parse_gcompris_readme(text):
    """Activity README blocks (Copyright/License/Source/Files) -> {file: fields}."""
    credits = {}
    for block in re.split(r"\n\s*\n", text):
        fields, files, key = {}, [], None
        for line in block.splitlines():
            m = re.match(r"(\w+):\s*(.*)$", line)
            if m:
                key, value = m.group(1).lower(), m.group(2).strip()
                if key == "files":
                    files += value.split()
                else:
                    fields[key] = value
            elif key == "files" and line.strip():
                files.append(line.strip())
        for f in files:
            credits[f] = fields
    return credits


def parse_debian_copyright(text):
    """DEP-5 paragraphs -> list of (file globs, copyright lines, license name)."""
    stanzas = []
    for para in text.split("\n\n"):
        fields, key = {}, None
        for line in para.splitlines():
            if line[:1] in (" ", "\t") and key:
                fields[key].append(line.strip())
            elif ":" in line:
                key, value = line.split(":", 1)
                fields[key] = [value.strip()]
        if "Files" in fields and "Copyright" in fields:
            globs = " ".join(fields["Files"]).split()
            stanzas.append((globs, [c for c in fields["Copyright"] if c], fields["License"][0]))
    return stanzas


def clean_author(lines):
    text = "; ".join(re.sub(r"\s*<[^>]*>", "", c) for c in lines)
    return text.replace("´", "").replace('"', "").strip()


def gcompris_photos(root):
    version = PACKAGES["gcompris-qt-data"]
    for activity, short in GCOMPRIS_ACTIVITIES.items():
        rcc = f"{GCOMPRIS_RCC}/{activity}.rcc"
        entries = dict(rcc_entries((root / rcc).read_bytes()))
        readmes = {p.rsplit("/", 1)[0]: parse_gcompris_readme(b.decode("utf-8"))
                   for p, b in entries.items() if p.endswith("/README")}
        for path, raw in sorted(entries.items()):
            if not path.lower().endswith((".webp", ".jpg", ".jpeg", ".png")):
                continue
            folder, fname = path.rsplit("/", 1)
            credit = readmes.get(folder, {}).get(fname)
            if credit is None:   # a README one level up names files as "<subfolder>/<file>"
                parent, sub = folder.rsplit("/", 1)
                key = f"{sub}/{fname}"
                credit = readmes.get(parent, {}).get(README_TYPOS.get(key, key))
            if not credit or not credit.get("license"):
                die(f"no license for {rcc}:{path}")
            yield (f"gcompris_{short}_{Path(fname).stem}", raw,
                   {"package": f"gcompris-qt-data {version}", "path": f"{rcc}: {path}",
                    "author": credit.get("copyright", ""), "license": credit["license"],
                    "origin": credit.get("source", "")})


def mate_photos(root):
    version = PACKAGES["mate-backgrounds"]
    stanzas = parse_debian_copyright((root / MATE_COPYRIGHT).read_text("utf-8"))
    for path in sorted((root / MATE_DIR / "nature").glob("*.jpg")):
        rel = path.relative_to(root / MATE_DIR).as_posix()
        match = [s for s in stanzas if any(fnmatch.fnmatch(rel, g) for g in s[0])]
        if not match:
            die(f"no license for {rel}")
        _, authors, lic = match[-1]
        yield (f"mate_{path.stem.lower()}", path.read_bytes(),
               {"package": f"mate-backgrounds {version}",
                "path": path.relative_to(root).as_posix(), "author": clean_author(authors),
                "license": lic, "origin": "debian/copyright of mate-backgrounds"})


def dhash(img):
    g = img.convert("L").resize((9, 8), Image.BILINEAR)
    px = list(g.tobytes())
    return sum(1 << i for i in range(64) if px[i // 8 * 9 + i % 8] > px[i // 8 * 9 + i % 8 + 1])


def main():
    work = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/debimg")
    work.mkdir(parents=True, exist_ok=True)
    roots = {pkg: extracted(pkg, v, work) for pkg, v in PACKAGES.items()}
    seen = {f"images/{p.name}": dhash(Image.open(p)) for p in sorted((ROOT / "images").glob("*.jpg"))}
    rows, skipped = [], []
    sources = list(gcompris_photos(roots["gcompris-qt-data"])) + list(mate_photos(roots["mate-backgrounds"]))
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.jpg"):   # only once every source has its license
        old.unlink()
    for stem, raw, meta in sources:
        img = Image.open(io.BytesIO(raw))
        img.load()
        if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
            skipped.append(f"{stem}: has transparency (cut-out)")
            continue
        if min(img.size) < MIN_SHORT:
            skipped.append(f"{stem}: short side {min(img.size)} < {MIN_SHORT}")
            continue
        h = dhash(img)
        twin = next((k for k, v in seen.items() if bin(h ^ v).count("1") <= 4), None)
        if twin:
            skipped.append(f"{stem}: near-duplicate of {twin}")
            continue
        seen[stem] = h
        img = img.convert("RGB")
        img.thumbnail((MAX_SIDE, MAX_SIDE), Image.LANCZOS)
        name = f"{stem.lower()}.jpg"
        if not re.fullmatch(r"[a-z0-9_]+\.jpg", name):
            die(f"bad file name {name!r}")
        img.save(OUT / name, "JPEG", quality=QUALITY)
        rows.append((name, meta))
    write_readme(rows)
    for s in skipped:
        print("skipped", s)
    total = sum(p.stat().st_size for p in OUT.glob("*.jpg"))
    print(f"wrote {len(rows)} photos, {total / 1e6:.2f} MB, to {OUT}")


HEADER = """# images/holdout

Real photographs held out from calibration (calibration reads only the top level of
`images/`), for measuring how often a quantized model agrees with its float source on
photos it was not calibrated on. Rebuilt by `scripts/collect_holdout.py` from Debian
packages (extracted with `dpkg-deb -x`, never installed); each photo is resized (longer side
at most 480 px, Lanczos) and re-encoded as RGB JPEG, quality 92: those are the only changes.

**Inclusion rule** (fixed before any model was run on these photos; no model output was used
to choose, filter or rank them): take every image of the sources below, unless it has
transparency (a cut-out), its short side is under 200 px, or it is a near-duplicate of one
already taken or of a calibration photo in `images/*.jpg`. Sources were chosen for a
redistributable per-file license and for object-centred content (by looking at them: photo
or drawing, object or scene; never by a model):

* gcompris-qt-data 3.1-2, activities `explore_farm_animals`, `explore_world_animals`,
  `erase` (animals), `explore_world_music` (musicians and instruments) and
  `explore_monuments` (buildings and monuments). The images are
  inside Qt resource files `usr/share/gcompris-qt/rcc/<activity>.rcc`; the author, license
  and original (mostly Wikimedia Commons) of each image are given by the activity's
  `README` shipped in the same .rcc, and are copied below. (Debian's own copyright file for
  this package is older than these activities and does not list them individually.)
* mate-backgrounds 1.26.0-1, `usr/share/backgrounds/mate/nature/*.jpg`; authors and
  license (GPL-2+) from `usr/share/doc/mate-backgrounds/copyright`.

CC BY / CC BY-SA photos: the attribution is the author column and the license is the one
named; these files are resized copies (a modification) and stay under the same license. The
GPL-2+ photos are separate works under the GPL, version 2 or later.
"""

FOOTER = """
## Looked at and left out

* gcompris `clickgame` `sea1..6` (underwater scenes, PD/CC0): scenes rather than objects.
* gcompris `lang` (Art4Apps word pictures, CC BY-SA 3.0): drawings, not photos.
* gcompris `categorization` (objects, tools, monuments, fish; PD/CC0): cut-outs on a
  transparent background.
* gcompris `paintings`, `details`, `babyshapes`: paintings or pieces of paintings.
* gcompris `louis-braille`: a mix of drawings and small (about 255 px) photos whose README
  credits only "Bruno Coudoin and others" under GPLv3, so the authorship of the photos is
  unclear.
* gcompris `photo_hunter` (SVG clipart), `leftright` (hand cut-outs), `solar_system` and
  `gravity` (planet renders with transparency), `chronos` (drawings), `digital_electricity`
  (256 px textures), other activities (drawings and icons).
* mate-backgrounds `abstract/` (`Elephants*.jpg` is painted art, in three resolutions; the
  PNGs are abstract) and `desktop/` (abstract/gradient wallpapers).
* Not downloaded or examined: plasma-workspace-wallpapers, budgie-backgrounds,
  gnome-backgrounds and the other wallpaper packages, and PyPI wheels: the sources above
  already fill the size budget with object-centred photos.
"""


def write_readme(rows):
    lines = [HEADER, "| file | package | path in package | author / copyright | license | original |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, m in rows:
        cells = [name, m["package"], f"`{m['path']}`", m["author"], m["license"], m["origin"]]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    (OUT / "README.md").write_text("\n".join(lines) + "\n" + FOOTER, "utf-8")


if __name__ == "__main__":
    main()
