"""The README's quick start and "Your own newsletter" run word for word, so the README cannot drift from the code.

Each command line of those two blocks is read from README.md and given to bash as written. The one step the
README leaves to the reader ("commented: edit it") is done by the test: the scaffold's feeds are pointed at
local feed files, so nothing leaves the machine, and `people.csv` is written as a reader would write it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import rss

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
BIN = Path(sys.executable).parent  # where this environment's `newsletter` is


def block(heading: str) -> list[str]:
    """The command lines of the first ```sh block under a `## heading` (comments kept: bash ignores them)."""
    section = README.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```sh\n(.*?)```", section, re.S)
    assert code, f"no sh block under '## {heading}'"
    return [line for line in code.group(1).splitlines() if line.strip()]


def bash(line: str, cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["bash", "-c", line], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"`{line}` exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEWSLETTER_", "SENDGRID_"))}
    env.update(COLUMNS="200", **extra)
    return env


def test_the_blocks_are_the_ones_this_test_knows() -> None:
    """A changed block must be looked at here too: the next test gives the reader's edit for each command."""
    assert block("Quick start") == [
        "python3 -m venv .venv && . .venv/bin/activate && pip install -e . && newsletter demo"]
    commands = [line.split("#")[0].strip() for line in block("Your own newsletter")]
    assert commands == [
        "newsletter init ai-weekly",
        "newsletter collect ai-weekly",
        "newsletter build ai-weekly",
        "newsletter issue show 1",
        "newsletter subscribers import people.csv -n ai-weekly",
        "newsletter send ai-weekly --test-to me@example.com",
        "newsletter send ai-weekly",
    ]


@pytest.mark.slow  # seven processes, a few seconds each
def test_your_own_newsletter_runs_as_written(tmp_path: Path) -> None:
    env = clean_env(PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    feeds = tmp_path / "feeds"
    feeds.mkdir()
    body = " ".join(["The council met again and talked it through at length."] * 30)  # long: no article fetch
    for name in ("desk", "wire"):
        (feeds / f"{name}.xml").write_bytes(rss(name.title(), [
            {"guid": f"{name}-{n}", "title": f"{name.title()} story {n}", "link": f"https://{name}.example/{n}",
             "body": f"<p>{body} Story {n}.</p>", "hours_ago": n + 1} for n in range(3)]))
    outputs: list[str] = []
    for line in block("Your own newsletter"):
        outputs.append(bash(line, tmp_path, env).stdout)
        if line.startswith("newsletter init"):
            # The reader's edit: their own feeds (local files here) instead of the scaffold's examples.
            path = tmp_path / "schedules" / "ai-weekly.toml"
            text = path.read_text(encoding="utf-8")
            names = iter(["desk", "wire"])
            text = re.sub(r'^url = "https://[^"]+"', lambda _m, n=names: f'url = "{feeds}/{next(n)}.xml"', text,
                          flags=re.M)
            text = text.replace("related = 3", "related = 0")
            path.write_text(text, encoding="utf-8")
            (tmp_path / "people.csv").write_text("email,name\nann@example.com,Ann\nbo@example.org,Bo\n",
                                                 encoding="utf-8")
    init, collect, build, show, imported, test_send, send = outputs
    assert "Wrote schedules/ai-weekly.toml" in init
    assert "6 new items from 2 sources; 0 failed." in collect
    assert "Built issue #1" in build
    assert "Desk story 0" in show
    assert "2" in imported
    assert "Sent a test of issue #1 to me@example.com" in test_send
    assert "Sent issue #1 of ai-weekly: 2 now" in send
    assert len(list((tmp_path / "outbox").rglob("*.eml"))) == 3  # the test, then each reader once


@pytest.mark.slow  # a fresh venv and `pip install -e .`: half a minute or more with pip's cache
def test_the_quick_start_runs_as_written_in_a_fresh_checkout(tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    shutil.copytree(ROOT, checkout, ignore=shutil.ignore_patterns(
        ".venv", ".git", "__pycache__", "*.egg-info", ".pytest_cache", ".ruff_cache", ".mypy_cache",
        "newsletter-demo", "outbox", "*.db", "build", "node_modules"))
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if Path(p) != BIN)
    env = clean_env(PATH=path)
    env.pop("VIRTUAL_ENV", None)
    (line,) = block("Quick start")
    out = bash(line, checkout, env, timeout=900).stdout
    assert (checkout / "newsletter-demo").is_dir() and list((checkout / "newsletter-demo").rglob("*.eml"))
    assert "newsletter-demo" in out
