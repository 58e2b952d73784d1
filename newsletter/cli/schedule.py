"""`newsletter run` and `newsletter schedule list/run`: scheduled, automated sends."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta

import typer
from rich.table import Table

from newsletter.cli.common import console, engine, fail, missing_database, require_scale, settings, warn


def _when(value: datetime | None) -> str:
    if value is None:
        return "—"
    local = f"{value:%a %Y-%m-%d %H:%M %Z}"
    return local if value.utcoffset() == timedelta(0) and value.tzname() == "UTC" else \
        f"{local} ({value.astimezone(UTC):%H:%M} UTC)"


def _warn_not_scheduled(errors: list[str]) -> None:
    """Each schedule file that does not load, in words on stderr (the JSON log line alone is easy to miss)."""
    for error in errors:
        warn(f"{error} (not scheduled until it loads)")


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run_cmd(
        tick: float = typer.Option(5.0, "--tick", min=0.2, help="Seconds between housekeeping passes "
                                   "(lease renewal, schedule file changes, approvals)."),
        scale: bool = typer.Option(False, "--scale", help="Scale mode (as NEWSLETTER_SCALE=1, PostgreSQL only): "
                                   "defer the jobs to `newsletter worker` processes instead of running them here."),
    ) -> None:
        """Keep every newsletter on time: collect, build, check and send as the schedule files say.

        One process per database: a second one is refused. Edit schedule files while it runs (or send
        SIGHUP); SIGTERM stops it cleanly. Example: `newsletter run`
        """
        if require_scale(scale):
            from newsletter.cli.scale import run_scheduler

            run_scheduler()
            return
        from newsletter.schedule.lease import LeaseHeld
        from newsletter.schedule.runner import Runner, setup_logging

        setup_logging()
        runner = Runner(engine(), settings(), tick_seconds=tick)
        runner.on_config_errors = _warn_not_scheduled
        try:
            runner.start()
        except LeaseHeld as exc:
            fail(str(exc))
        if not runner.rt.newsletters:
            console.print(f"[yellow]note:[/] no schedule files in {settings().schedules_dir}/ yet; "
                          "add one (`newsletter init SLUG`) and it is picked up without a restart.")
        raise typer.Exit(runner.serve())

    schedule_app = typer.Typer(help="See and run the schedules.", no_args_is_help=True)
    app.add_typer(schedule_app, name="schedule")

    @schedule_app.command("list")
    def list_cmd() -> None:
        """Each newsletter's next collect and send, in its timezone and in UTC, and its last run.

        Example: `newsletter schedule list`
        """
        from newsletter.config import load_all
        from newsletter.report.guard import active_hold
        from newsletter.schedule.lease import current
        from newsletter.schedule.status import schedule_status
        from newsletter.store.db import session_scope

        now = datetime.now(UTC)
        table = Table()
        for col in ("newsletter", "send", "next send", "next collect", "approval", "last run", "outcome"):
            table.add_column(col)
        # Before the first run there may be no database: the schedule still shows, and none is created.
        eng = engine() if missing_database() is None else None
        loaded = load_all(settings().schedules_dir)
        _warn_not_scheduled(loaded.errors)
        with contextlib.nullcontext(None) if eng is None else session_scope(eng) as session:
            for slug, nl in sorted(loaded.newsletters.items()):
                status = schedule_status(session, nl, now)
                approval = nl.schedule.approval
                if status.next_draft is not None:
                    approval += f"; next draft {_when(status.next_draft)}"
                outcome = status.outcome
                held = active_hold(session, slug) if session is not None else None
                if held is not None:  # the guard (complaints, bounces) holds every scheduled send until released
                    outcome = f"HELD: {held.reason}" + ("" if outcome == "—" else f"; last: {outcome}")
                table.add_row(slug, f"{nl.schedule.send} ({nl.schedule.timezone})", _when(status.next_send),
                              _when(status.next_collect), approval,
                              f"{status.last_at:%Y-%m-%d %H:%M} UTC" if status.last_at else "never", outcome)
        console.print(table)
        if loaded.errors:
            console.print(f"{len(loaded.errors)} schedule file(s) did not load (see the warnings): nothing of "
                          "theirs is collected or sent until they do.", highlight=False)
        lease = current(eng) if eng is not None else None
        if lease is not None and lease.expires_at > now.replace(tzinfo=None):
            console.print(f"`newsletter run` is running ({lease.holder}).", highlight=False)
        else:
            console.print("No `newsletter run` is running against this database: nothing is sent on schedule.")

    @schedule_app.command("run")
    def run_now_cmd(
        slug: str = typer.Argument(..., help="The newsletter."),
        now: bool = typer.Option(False, "--now", help="Run the cycle immediately (required)."),
    ) -> None:
        """Run one newsletter's cycle now: collect, build this period's issue, check, approve-or-hold, send.

        Once per period still holds: if this period's issue already went out, nothing is sent.
        Example: `newsletter schedule run ai-weekly --now`
        """
        from newsletter.cli.common import newsletter
        from newsletter.schedule.jobs import Runtime, run_cycle
        from newsletter.schedule.lease import LeaseHeld, acquire, new_holder, release
        from newsletter.schedule.runner import setup_logging

        if not now:
            fail("add --now to run the cycle immediately (e.g. `newsletter schedule run SLUG --now`)")
        nl = newsletter(slug)
        eng = engine()
        holder = new_holder()
        try:
            acquire(eng, holder)  # a running `newsletter run` does this itself: never both at once
        except LeaseHeld as exc:
            fail(f"{exc} It runs due cycles and sends approved issues by itself.")
        setup_logging()
        try:
            result = run_cycle(Runtime(eng, settings(), newsletters={slug: nl}), slug, reason="manual")
        finally:
            release(eng, holder)
        for step in result.steps:
            console.print(f"  {step.job}: {step.outcome}" + (f" — {step.detail}" if step.detail else ""),
                          highlight=False)
        console.print(f"{slug} {result.period}: {result.outcome}" + (f" — {result.detail}" if result.detail else ""),
                      highlight=False)
        if result.outcome == "failed":
            raise typer.Exit(1)
