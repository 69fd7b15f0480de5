"""The built wheel: it carries LICENSE, project URLs and a long description that starts with
``pip install mqttkit`` and a five-line example; installed from the wheel into a fresh venv,
``mqttkit --version`` works and the example runs (against a throw-away Mosquitto).

The wheel is built with ``pip wheel`` (pip fetches hatchling, the build backend, from PyPI), the
venv made with ``venv``; every step is bounded by a timeout.
"""

from __future__ import annotations

import email
import os
import re
import subprocess
import sys
import venv
import zipfile
from email.message import Message
from pathlib import Path

import pytest

from mqttkit.testing import MosquittoBroker
from tests.cli.tools import ROOT

BUILD_TIMEOUT = 300


def _clean_env() -> dict[str, str]:
    # Nothing of this tree on the path: the venv must run what the wheel installed.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(out)],
        check=True,
        timeout=BUILD_TIMEOUT,
        env=_clean_env(),
    )
    (built,) = out.glob("mqttkit-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed; its bin directory."""
    home = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=True).create(home)
    bin_dir = home / "bin"
    subprocess.run(
        [str(bin_dir / "python"), "-m", "pip", "install", "-q", "--no-index", str(wheel)],
        check=True,
        timeout=BUILD_TIMEOUT,
        env=_clean_env(),
    )
    return bin_dir


def metadata(wheel: Path) -> Message:
    with zipfile.ZipFile(wheel) as z:
        (name,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        return email.message_from_bytes(z.read(name))


def example(markdown: str) -> str:
    """The first ```python block of a Markdown text."""
    found = re.search(r"```python\n(.*?)```", markdown, re.DOTALL)
    assert found is not None
    return found.group(1)


def test_the_wheel_carries_the_license(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        (name,) = [n for n in z.namelist() if n.endswith(".dist-info/licenses/LICENSE")]
        text = z.read(name).decode()
    assert text == (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License\n\nCopyright (c) 2026 The mqttkit developers\n")
    meta = metadata(wheel)
    assert meta["License-Expression"] == "MIT"
    assert meta["License-File"] == "LICENSE"


def test_the_wheel_has_project_urls(wheel: Path) -> None:
    urls = dict(u.split(", ", 1) for u in metadata(wheel).get_all("Project-URL") or [])
    assert set(urls) == {"Homepage", "Documentation", "Source", "Issues", "Changelog"}
    assert all(u.startswith("https://") for u in urls.values())


def test_the_long_description_starts_with_install_and_an_example(wheel: Path) -> None:
    meta = metadata(wheel)
    assert meta["Description-Content-Type"] == "text/markdown"
    description = meta.get_payload()
    assert isinstance(description, str)
    assert description.startswith("# mqttkit\n\n```sh\npip install mqttkit\n```\n\n```python\n")
    code = example(description)
    assert len([line for line in code.splitlines() if line.strip()]) == 5
    # The same example right after README's two commands (README must start with those).
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme.startswith("# mqttkit\n\n```sh\nbash scripts/hello.sh")
    assert example(readme.split("## Install and use", 1)[1]) == code


def test_mqttkit_version_from_a_fresh_venv(installed: Path) -> None:
    done = subprocess.run(
        [str(installed / "mqttkit"), "--version"],
        capture_output=True,
        timeout=60,
        check=False,
        env=_clean_env(),
        cwd=installed,
    )
    assert (done.returncode, done.stderr) == (0, b"")
    assert re.fullmatch(rb"mqttkit \d+\.\d+\.\d+\S*\n", done.stdout), done.stdout


def test_the_example_runs_from_the_wheel(
    installed: Path, wheel: Path, mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    code = example(metadata(wheel).get_payload())  # type: ignore[arg-type]
    script = tmp_path / "example.py"
    script.write_text(code.replace("mqtt://localhost", mosquitto.url), encoding="utf-8")
    done = subprocess.run(
        [str(installed / "python"), str(script)],
        capture_output=True,
        timeout=60,
        check=False,
        env=_clean_env(),
        cwd=tmp_path,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, b"Hello mqtt\n", b"")
