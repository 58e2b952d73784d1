"""The package list in pyproject.toml is written by hand (see the comment there): a subpackage left out of it
would be missing from every installed copy while all tests, run from the checkout, still pass."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_for_installation() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "newsletter").rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert found - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert "newsletter.default_templates" in listed


def test_shipped_data_files_are_declared() -> None:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["newsletter"]
    for needed in ("demo/feeds/*", "store/migrations/versions/*.py", "render/*.json"):
        assert needed in data, needed
