"""The Pi + Coral setup the docs give (docs/raspberry-pi.md, docs/troubleshooting.md), and the GitHub workflow."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Current majors (the Node 20 ones are being moved to Node 24 by GitHub).
MIN_MAJOR = {"actions/checkout": 5, "actions/setup-python": 6, "actions/upload-artifact": 5,
             "actions/download-artifact": 5, "actions/cache": 4}


def test_workflows_use_current_actions_and_read_only_token():
    files = sorted((REPO / ".github" / "workflows").glob("*.y*ml"))
    assert files
    for f in files:
        text = f.read_text()
        assert re.search(r"^permissions:\n  contents: read$", text, re.M), f"{f.name}: no top-level read-only permissions"
        for action, major in re.findall(r"uses:\s*(actions/[\w-]+)@v(\d+)", text):
            assert int(major) >= MIN_MAJOR.get(action, 0), f"{f.name}: {action}@v{major}"


def test_fallback_udev_rule_matches_the_accelerator_only():
    text = (REPO / "docs" / "raspberry-pi.md").read_text()
    rules = [ln.strip() for ln in text.splitlines() if "ATTRS{idVendor}" in ln]
    assert rules, "the Pi page's fallback udev rule is gone"
    ids = set()
    for rule in rules:
        vendor = re.search(r'ATTRS\{idVendor\}=="(\w+)"', rule).group(1)
        product = re.search(r'ATTRS\{idProduct\}=="(\w+)"', rule)
        assert product, f"a rule on a whole vendor id (18d1 is every Android phone too): {rule}"
        ids.add((vendor, product.group(1)))
    assert ids == {("1a6e", "089a"), ("18d1", "9302")}


def test_pi_page_names_the_libedgetpu_runtime_mismatch():
    pi = (REPO / "docs" / "raspberry-pi.md").read_text()
    assert "issue 812" in pi and "feranick/libedgetpu" in pi and "2.5.0.post1" in pi
    assert "## Combinations known to work" in pi
    trouble = (REPO / "docs" / "troubleshooting.md").read_text()
    assert "crashed a probe process (SIGSEGV)" in trouble
