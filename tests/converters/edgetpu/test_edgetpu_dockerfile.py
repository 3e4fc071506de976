"""The compiler Dockerfile, parsed: pinned base, signed-by keyring, non-root, entrypoint; shipped."""

import json
import re
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


def instructions(text):
    """[(INSTRUCTION, arguments)] with line continuations joined and comments dropped."""
    out, buf = [], ""
    for line in text.splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


@pytest.fixture(scope="module")
def dockerfile():
    from converters.edgetpu.backends import dockerfile_path

    return Path(dockerfile_path()).read_text()


def test_base_is_pinned_debian_amd64(dockerfile):
    ins = instructions(dockerfile)
    froms = [a for i, a in ins if i == "FROM"]
    assert len(froms) == 1
    assert froms[0].startswith("--platform=linux/amd64 ")
    image = froms[0].split()[1]
    assert re.fullmatch(r"debian:\d+\.\d+-slim@sha256:[0-9a-f]{64}", image), image


def test_coral_repo_with_signed_by_keyring(dockerfile):
    run = " ".join(a for i, a in instructions(dockerfile) if i == "RUN")
    assert not re.search(r"\bapt-key (add|adv)\b", run)   # the URL is apt-key.gpg; the tool is gone
    keyring = "/usr/share/keyrings/coral-edgetpu-archive-keyring.gpg"
    assert f"gpg --dearmor -o {keyring} /tmp/coral-apt-key.gpg" in run
    assert "curl -fsSL -o /tmp/coral-apt-key.gpg" in run     # not piped: sh has no pipefail
    assert "https://packages.cloud.google.com/apt/doc/apt-key.gpg" in run
    assert (f"deb [signed-by={keyring}] https://packages.cloud.google.com/apt coral-edgetpu-stable main"
            in run)
    assert re.search(r"apt-get install [^;]*edgetpu-compiler", run)
    assert "rm -rf /var/lib/apt/lists" in run


def test_non_root_models_folder_entrypoint(dockerfile):
    ins = instructions(dockerfile)
    users = [a for i, a in ins if i == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert [a for i, a in ins if i == "WORKDIR"][-1] == "/models"
    assert json.loads([a for i, a in ins if i == "ENTRYPOINT"][-1]) == ["edgetpu_compiler"]
    # every RUN line parses as shell words (catches a broken continuation)
    for i, a in ins:
        if i == "RUN":
            shlex.split(a)


def test_repo_root_copy_is_the_packaged_file(dockerfile):
    root = REPO / "compiler" / "Dockerfile"
    assert root.is_symlink() and root.resolve() == (REPO / "converters" / "edgetpu" / "Dockerfile").resolve()
    assert root.read_text() == dockerfile


def test_image_tag_follows_the_dockerfile_hash(dockerfile):
    import hashlib

    from converters.edgetpu.backends import image_tag

    assert image_tag().endswith(":" + hashlib.sha256(dockerfile.encode()).hexdigest()[:12])


@pytest.mark.slow
def test_wheel_ships_the_dockerfile(tmp_path):
    """`pip install .` (non-editable) gets the Dockerfile: build the wheel and look inside."""
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                        "-w", str(tmp_path), str(REPO)], capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        pytest.skip(f"could not build a wheel here: {p.stderr.strip().splitlines()[-1:]}")
    (wheel,) = tmp_path.glob("edgeport-*.whl")
    with zipfile.ZipFile(wheel) as z:
        assert "converters/edgetpu/Dockerfile" in z.namelist()
