"""The base install (`pip install -e .`, no extras): every command but scale mode works, and scale mode without
its extra says what to install in one line.

The test environment has the `postgres` extra, so these run the CLI in a subprocess where `psycopg` and
`procrastinate` cannot be imported (as on the README's install). `.ci/run` also checks a real base install.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import schedule_toml

ROOT = Path(__file__).resolve().parents[1]

# Run the CLI with the `postgres` extra's modules missing: a None entry in sys.modules makes `import` fail with
# ModuleNotFoundError and importlib.util.find_spec answer None, as when the package is not installed.
BASE_INSTALL = ("import sys\n"
                "for name in ('psycopg', 'procrastinate'):\n"
                "    sys.modules[name] = None\n"
                "from newsletter.cli.main import main\n"
                "sys.argv[0] = 'newsletter'\n"
                "main()\n")

PG_URL = "postgresql+psycopg://news@127.0.0.1:9/newsletter"  # never reached: the missing extra is said first


def _env(workdir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEWSLETTER_", "SENDGRID_"))}
    env.update({"NEWSLETTER_DATABASE_URL": f"sqlite:///{workdir / 'newsletter.db'}",
                "NEWSLETTER_OUTBOX_DIR": str(workdir / "outbox"), "NEWSLETTER_SECRET_KEY": "test-secret-key",
                "PYTHONPATH": str(ROOT), "COLUMNS": "80"})
    env.update(extra)
    return env


def base_cli(workdir: Path, *args: str, timeout: float = 90, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", BASE_INSTALL, *args], cwd=workdir, env=_env(workdir, **env),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def folder(tmp_path: Path, feed_server) -> Path:  # noqa: ANN001
    from tests.feedserver import Route

    feed_server.routes["/feed.xml"] = Route(b'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>'
                                            b"</channel></rss>")
    (tmp_path / "schedules").mkdir()
    (tmp_path / "schedules" / "paper.toml").write_text(
        schedule_toml("paper", [("Feed", feed_server.url("/feed.xml"))]), encoding="utf-8")
    return tmp_path


def test_the_blocker_really_hides_the_extra(folder: Path) -> None:
    probe = subprocess.run([sys.executable, "-c", BASE_INSTALL.split("from newsletter")[0] + "import procrastinate"],
                           capture_output=True, text=True, timeout=60)
    assert probe.returncode == 1 and "ModuleNotFoundError" in probe.stderr


@pytest.mark.parametrize("args, env", [
    (["run"], {"NEWSLETTER_SCALE": "1", "NEWSLETTER_DATABASE_URL": PG_URL}),
    (["run", "--scale"], {"NEWSLETTER_DATABASE_URL": PG_URL}),
    (["worker"], {"NEWSLETTER_DATABASE_URL": PG_URL}),
    (["scale", "status"], {"NEWSLETTER_DATABASE_URL": PG_URL}),
    (["scale", "collect"], {"NEWSLETTER_DATABASE_URL": PG_URL}),
    (["scale", "send", "paper"], {"NEWSLETTER_DATABASE_URL": PG_URL}),
    (["db", "upgrade", "--scale"], {"NEWSLETTER_DATABASE_URL": PG_URL}),
    (["issue", "list"], {"NEWSLETTER_DATABASE_URL": PG_URL}),
])
def test_scale_mode_without_its_extra_names_the_extra_in_one_line(folder: Path, args: list[str],
                                                                  env: dict[str, str]) -> None:
    result = base_cli(folder, *args, **env)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and "ModuleNotFoundError" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr  # one line, even at 80 columns
    assert lines[0].startswith("error: ") and "install newsletter[postgres]" in lines[0]
    assert "pip install 'newsletter[postgres]'" in lines[0]


class Run:
    """`newsletter run` on the base install, its stderr read as it comes."""

    def __init__(self, workdir: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", BASE_INSTALL, "run", "--tick", "0.3"], cwd=workdir,
                                     env=_env(workdir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, count: int = 1, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sum(text in line for line in list(self.lines)) >= count:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{text!r} x{count} not seen; stderr:\n" + "\n".join(self.lines))


@pytest.mark.slow  # a real process: a few seconds
def test_newsletter_run_starts_on_the_base_install_reports_bad_files_and_stops_on_sigterm(folder: Path) -> None:
    (folder / "schedules" / "new_york.toml").write_text(
        schedule_toml("ny", [("Feed", "https://example.com/feed.xml")]), encoding="utf-8")
    run = Run(folder)
    try:
        run.wait_for('"event": "runner-started"')
        run.wait_for("warning: schedules/new_york.toml")
        said = next(line for line in run.lines if line.startswith("warning: "))
        assert "new_york.toml" in said and "rename the file to new-york.toml" in said
        assert "not scheduled" in said
        # Every reload says it again, and a file broken while it runs is reported too.
        (folder / "schedules" / "paper.toml").write_text("name = [", encoding="utf-8")
        run.wait_for("warning: schedules/paper.toml: invalid TOML")
        run.wait_for("warning: schedules/new_york.toml", count=2)
        run.proc.send_signal(signal.SIGTERM)
        code = run.proc.wait(timeout=60)
        run._reader.join(timeout=5)
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
    assert code == 0, "\n".join(run.lines)
    assert any('"event": "runner-stopped"' in line for line in run.lines)
    assert not any("Traceback" in line for line in run.lines), "\n".join(run.lines)


def test_schedule_list_says_which_files_are_not_scheduled(folder: Path) -> None:
    (folder / "schedules" / "new_york.toml").write_text(
        schedule_toml("ny", [("Feed", "https://example.com/feed.xml")]), encoding="utf-8")
    result = base_cli(folder, "schedule", "list")
    assert result.returncode == 0, result.stderr
    (warning,) = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert "schedules/new_york.toml: slug: 'new_york' (the file name) is not a valid slug" in warning
    assert "paper" in result.stdout and "1 schedule file(s) did not load" in result.stdout
