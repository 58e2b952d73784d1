"""Scale mode asked for where it cannot work says so, naming the setting, instead of falling back silently."""

from __future__ import annotations

from pathlib import Path


def test_scale_mode_on_sqlite_is_a_clear_error(workdir: Path, cli, monkeypatch) -> None:  # noqa: ANN001
    for args in (["worker"], ["scale", "send", "city"], ["scale", "collect"], ["db", "upgrade", "--scale"]):
        result = cli(*args, ok=False)
        assert result.exit_code == 1, args
        assert "PostgreSQL" in result.output and "sqlite:///" in result.output, (args, result.output)
    monkeypatch.setenv("NEWSLETTER_SCALE", "1")
    result = cli("db", "upgrade", ok=False)
    assert result.exit_code == 1 and "NEWSLETTER_SCALE=1" in result.output
    monkeypatch.setenv("NEWSLETTER_SCALE", "0")
    assert "up to date" in cli("db", "upgrade").output or "Upgraded" in cli("db", "upgrade").output
