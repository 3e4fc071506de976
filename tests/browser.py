"""A real browser for the HTML reports: Debian's headless Chromium, or a skip saying why.

`open_page(path)` loads a local file once for its DOM (with Chromium's console log on
stderr) and once for a screenshot; it returns the DOM text, the console's error lines and
the screenshot's pixels (a numpy array). .ci/run installs `chromium` when it is missing.
"""

import os
import re
import shutil
import subprocess
import tempfile

import pytest

# Chromium must not reach for the network (the machine has none, and a report needs none).
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--mute-audio"]
CONSOLE_ERROR = re.compile(r"CONSOLE.*(error|Error|Uncaught)|Failed to load resource|Refused to (load|apply|execute)|"
                           r"net::ERR_")


def chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no Chromium on PATH (Debian: apt-get install chromium; .ci/run installs it)")


def open_page(path, width=1200, height=1600, timeout=120):
    exe = chromium()
    url = "file://" + os.path.abspath(path)
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
                              "--dump-dom", url], capture_output=True, text=True, timeout=timeout)
        errors = [ln for ln in dom.stderr.splitlines() if CONSOLE_ERROR.search(ln)]
    with tempfile.TemporaryDirectory() as profile:
        shot = os.path.join(profile, "shot.png")
        subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
                        f"--screenshot={shot}", url], capture_output=True, text=True, timeout=timeout)
        import numpy as np
        from PIL import Image

        pixels = np.asarray(Image.open(shot).convert("RGB")) if os.path.isfile(shot) else None
    return dom.stdout, errors, pixels


def screenshot(path, out_png, width=1200, height=1600, timeout=120):
    """Save a screenshot of the page at `path` to `out_png` (for the docs)."""
    exe = chromium()
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
                        f"--screenshot={os.path.abspath(out_png)}", "file://" + os.path.abspath(path)],
                       capture_output=True, text=True, timeout=timeout, check=True)
