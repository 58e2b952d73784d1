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


def test_data_folders_are_listed_too_and_the_metadata_is_current() -> None:
    """setuptools warns (on every install) about importable folders missing from `packages`, and about
    `project.license` as a table; mjml's extra must be spelled as mjml declares it, or pip warns it is absent."""
    import importlib.metadata

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(project["tool"]["setuptools"]["packages"])
    folders = {
        ".".join(folder.relative_to(ROOT).parts)
        for folder in (ROOT / "newsletter").rglob("*")
        if folder.is_dir() and "__pycache__" not in folder.parts and any(f.is_file() for f in folder.iterdir())
    }
    partials = {"newsletter.default_templates." + ".".join(d.relative_to(ROOT / "templates").parts)
                for d in (ROOT / "templates").rglob("*") if d.is_dir()}
    assert (folders | partials) - listed == set(), "add these folders to [tool.setuptools] packages"
    assert isinstance(project["project"]["license"], str)  # an SPDX expression
    (mjml,) = [d for d in project["project"]["dependencies"] if d.startswith("mjml")]
    extra = mjml.split("[", 1)[1].split("]", 1)[0]
    assert extra in (importlib.metadata.metadata("mjml").get_all("Provides-Extra") or [])
