"""The README is a hub: every page and anchor it (and each docs page) links to exists, the README
stays short, and no sample output carries a machine detail."""

import re

import pytest

from tests.conftest import REPO

PAGES = [REPO / "README.md", REPO / "CONTRIBUTING.md", REPO / "CHANGELOG.md"] + sorted((REPO / "docs").glob("*.md"))
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(path):
    """GitHub's anchors of a Markdown file's headings."""
    out = set()
    for line in path.read_text().splitlines():
        m = re.match(r"^#+\s+(.*)", line)
        if m:
            text = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            out.add(text)
    return out


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves(page):
    bad = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"^[a-z]+:", target):          # http(s), mailto: outside the repository
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            bad.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target}: no heading with that anchor")
    assert bad == [], f"{page.name}: {bad}"


def test_readme_is_a_hub():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 250, len(lines)
    for page in ("commands", "formats", "validation", "edgetpu", "raspberry-pi", "corpus", "reliability",
                 "architecture", "troubleshooting", "benchmarks"):
        assert f"docs/{page}.md" in "\n".join(lines), page


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_machine_detail_in_samples(page):
    text = page.read_text()
    assert not re.search(r"\b(10|172\.(1[6-9]|2\d|3[01])|192\.168)\.\d+\.\d+(:\d+)?\b", text), "a private address"
    assert "registry-1.docker.io" not in text and "/root/" not in text and "/home/" not in text
    assert not re.search(r"/work/|/tmp/pytest-of", text), "a path of the machine that ran it"
