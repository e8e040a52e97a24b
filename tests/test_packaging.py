"""The shipped search spaces live in the top-level search_spaces/ and install as package data
`regene_search/search_spaces`; an installed (non-editable) package and a source checkout both find them."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest
from setuptools import find_packages

from regene_search.search.space import SPACES_DIR, default_space_path

ROOT = Path(__file__).resolve().parents[1]
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
SPACES = sorted(p.name for p in (ROOT / "search_spaces").glob("*.toml"))


def test_pyproject_lists_every_package_and_maps_the_search_spaces():
    # The package-dir mapping rules out `packages.find`: a new subpackage must be listed by hand.
    missing = set(find_packages(str(ROOT), include=["regene_search*"])) - set(SETUPTOOLS["packages"])
    assert not missing, f"add {sorted(missing)} to [tool.setuptools] packages in pyproject.toml"
    assert SETUPTOOLS["package-dir"] == {"regene_search.search_spaces": "search_spaces"}
    assert "regene_search.search_spaces" in SETUPTOOLS["packages"] and len(SPACES) >= 6


def test_a_source_checkout_reads_the_top_level_folder():
    assert SPACES_DIR == ROOT / "search_spaces"
    assert default_space_path("mnist") == ROOT / "search_spaces" / "mnist.toml"
    assert not (ROOT / "regene_search" / "search_spaces").exists(), "the search spaces have one home: search_spaces/"


@pytest.mark.slow
def test_a_plain_install_ships_the_search_spaces_as_package_data(tmp_path):
    """`pip install .` (a wheel, not editable) into a fresh venv; loaded from outside the repository."""
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(ROOT)],
                   check=True, cwd=tmp_path, timeout=600)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True, check=True).stdout.strip()
    # The dependencies (torch, ...) come from this venv's site-packages, read after the new venv's own.
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    wheel = next(wheels.glob("regene_search-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", site, str(wheel)], check=True, timeout=600)
    script = (
        "import json, regene_search.search.space as s\n"
        "print(s.SPACES_DIR)\n"
        "print(json.dumps(sorted(p.name for p in s.SPACES_DIR.glob('*.toml'))))\n"
        "print(len(s.load_space(s.default_space_path('mnist')).to_tune()))\n"
    )
    out = subprocess.run([python, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    where, names, params = out.stdout.splitlines()
    assert Path(where) == Path(site) / "regene_search" / "search_spaces"
    assert json.loads(names) == SPACES and int(params) > 0
