"""`newsletter worker` and `newsletter scale ...`: scale mode on PostgreSQL with procrastinate workers."""

from __future__ import annotations

import logging

import typer

from newsletter.cli.common import console, engine, fail, newsletter, newsletters, settings
from newsletter.config import ConfigError

WORK_QUEUES = ("collect", "build", "send", "maintenance")  # the `schedule` queue is `newsletter run`'s


def _url() -> str:
    """The PostgreSQL URL of scale mode; fails in one line without PostgreSQL or without the `postgres` extra.

    Every scale command calls this before it imports `newsletter.scale.app` (which needs procrastinate).
    """
    from newsletter.scale.mode import is_postgres, require_postgres_extra

    url = settings().database_url
    if not is_postgres(url):
        from newsletter.config import redact_url

        fail(f"scale mode needs PostgreSQL: NEWSLETTER_DATABASE_URL is {redact_url(url)} "
             "(e.g. postgresql+psycopg://user@host/newsletter)")
    try:
        require_postgres_extra()
    except ConfigError as exc:
        fail(str(exc))
    return url


def _ready(url: str) -> None:
    """The application schema and procrastinate's, created or upgraded (both idempotent)."""
    from newsletter.scale.app import ensure_schema

    engine()
    try:
        ensure_schema(url)
    except Exception as exc:  # an unreachable server or missing rights: say so, without the password
        from newsletter.config import redact_url

        fail(f"cannot prepare the job tables in {redact_url(url)}: {exc}")


def register(app: typer.Typer) -> None:
    @app.command("worker")
    def worker_cmd(
        concurrency: int = typer.Option(1, "--concurrency", "-c", min=1, help="Jobs run at once (threads)."),
        queues: str = typer.Option(",".join(WORK_QUEUES), "--queues", "-q",
                                   help="Comma-separated queues to take jobs from (add `schedule` to also keep the "
                                        "schedule, as `newsletter run` does in scale mode)."),
        heartbeat: float = typer.Option(10.0, "--heartbeat", min=0.1, help="Seconds between heartbeats."),
        stalled_after: float = typer.Option(30.0, "--stalled-after", min=0.5,
                                            help="A worker silent this long is dead: its jobs are retried."),
        log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error."),
    ) -> None:
        """Run a scale-mode worker: it takes jobs from the PostgreSQL queue until stopped (Ctrl-C: graceful).

        Run one or more on every machine; they share the work through the database.

        Example: `NEWSLETTER_DATABASE_URL=postgresql+psycopg://db/news newsletter worker --concurrency 4`
        """
        names = [q.strip() for q in queues.split(",") if q.strip()] or None
        run_worker(names, concurrency=concurrency, heartbeat=heartbeat, stalled_after=stalled_after,
                   log_level=log_level)

    scale_app = typer.Typer(help="Scale mode: hand work to `newsletter worker` processes.", no_args_is_help=True)
    app.add_typer(scale_app, name="scale")

    @scale_app.command("send")
    def scale_send_cmd(
        slug: str = typer.Argument(..., help="The newsletter."),
        issue_id: int = typer.Option(None, "--issue", help="Issue id (default: the latest issue)."),
        batch_size: int = typer.Option(1000, "--batch-size", min=1, max=1000, help="Recipients per batch."),
        parallel: int = typer.Option(None, "--parallel", min=1, help="send_batch jobs at once (default 16)."),
        force: bool = typer.Option(False, "--force", help="Send even when the preflight check fails."),
    ) -> None:
        """Queue the sending of an issue for the workers: exactly once per address, however many workers.

        Example: `newsletter scale send ai-weekly`, then watch `newsletter scale status`.
        """
        url = _url()  # first: it says so when the postgres extra is missing
        from newsletter.compose.build import BuildError, resolve_issue
        from newsletter.scale.app import connected
        from newsletter.store.db import session_scope

        newsletter(slug)
        _ready(url)
        with session_scope(engine()) as session:
            try:
                issue = resolve_issue(session, slug, issue_id)
            except BuildError as exc:
                fail(str(exc))
        if issue.status == "sent":
            console.print(f"Issue #{issue.number} of {slug} was already sent; nothing to do.")
            return
        if issue.status == "held":
            fail(f"issue #{issue.number} of {slug} is held by an editor; release it first")
        from newsletter.deliver.audience import empty_audience_hint, fresh_audience
        from newsletter.deliver.preflight import preflight_issue
        from newsletter.render.engine import TemplateError

        if fresh_audience(engine(), issue.id) is False and not force:
            fail(f"nobody would get issue #{issue.number}: {slug} has no active subscribers. Nothing queued; "
                 f"{empty_audience_hint(slug)} (--force sends it to nobody and marks it sent).")

        try:
            _, report = preflight_issue(engine(), newsletter(slug), issue.id, issue.number, settings())
        except TemplateError as exc:
            fail(str(exc))
        if report.failed:
            console.print(report.to_text(), highlight=False)
            if not force:
                fail("preflight failed: nothing queued. Fix the issue or template, or queue it with --force.")
        from newsletter.config import ConfigError
        from newsletter.deliver.factory import make_mailer
        from newsletter.deliver.mailer import DeliveryError
        from newsletter.deliver.send import check_mailer_ready

        if settings().dkim_key_file is not None:  # a key receivers could not verify: stopped here, not in workers
            try:
                check_mailer_ready(make_mailer(settings()), newsletter(slug))
            except (ConfigError, DeliveryError) as exc:
                fail(f"nothing queued: {exc}")
        from newsletter.scale import tasks

        with connected(url) as bound:
            job = bound.tasks[tasks.start_send.name].defer(issue_id=issue.id, batch_size=batch_size,
                                                            parallel=parallel, force=force)
        console.print(f"Queued the send of issue #{issue.number} of {slug} (job {job}); the workers take it from "
                      "here. `newsletter scale status` shows progress.")

    @scale_app.command("collect")
    def scale_collect_cmd(
        slugs: list[str] = typer.Argument(None, help="Newsletters to collect for (default: all)."),
        force: bool = typer.Option(False, "--force", help="Also fetch sources that are backing off after errors."),
        chunk: int = typer.Option(50, "--chunk", min=1, help="Sources per job."),
    ) -> None:
        """Queue the collection of every source, in chunks, for the workers.

        Example: `newsletter scale collect` (all newsletters) or `newsletter scale collect ai-weekly`
        """
        url = _url()  # first: it says so when the postgres extra is missing
        from newsletter.scale import tasks
        from newsletter.scale.app import connected

        known = newsletters()
        missing = [s for s in slugs or [] if s not in known]
        if missing:
            fail(f"unknown newsletter(s): {', '.join(missing)} (known: {', '.join(sorted(known)) or 'none'})")
        _ready(url)
        with connected(url) as bound:
            jobs = tasks.defer_collect(bound, slugs or None, force=force, chunk=chunk)
        console.print(f"Queued {jobs} collect jobs.")

    @scale_app.command("status")
    def scale_status_cmd() -> None:
        """Jobs by queue and state, and the sends in progress.

        Example: `newsletter scale status`
        """
        from rich.table import Table
        from sqlalchemy import text

        _url()
        eng = engine()
        with eng.connect() as conn:
            present = conn.execute(text("SELECT to_regclass('procrastinate_jobs') IS NOT NULL")).scalar()
            if not present:
                fail("no job tables yet: run `newsletter db upgrade` (with NEWSLETTER_SCALE=1) or start a worker")
            jobs = conn.execute(text("SELECT queue_name, status::text, count(*) FROM procrastinate_jobs "
                                     "GROUP BY 1, 2 ORDER BY 1, 2")).all()
            sends = conn.execute(text("SELECT s.id, s.issue_id, s.status, s.sent, s.total FROM send s "
                                      "WHERE s.status <> 'done' ORDER BY s.id")).all()
        table = Table(title="Jobs")
        for col in ("queue", "state", "jobs"):
            table.add_column(col)
        for queue, state, count in jobs:
            table.add_row(queue, state, str(count))
        console.print(table)
        for send_id, issue, state, sent, total in sends:
            console.print(f"send {send_id} (issue {issue}): {state}, {sent}/{total} delivered")


def run_worker(queues: list[str] | None, *, concurrency: int = 1, heartbeat: float = 10.0,
               stalled_after: float = 30.0, log_level: str = "info") -> None:
    """Run a procrastinate worker on these queues until stopped (SIGINT/SIGTERM finish the jobs in hand)."""
    import os
    import socket

    url = _url()
    _ready(url)
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("procrastinate").setLevel(max(logging.WARNING, logging.getLogger().level))
    from newsletter.scale import tasks
    from newsletter.scale.app import run_worker as run_jobs

    tasks.STALLED_SECONDS = stalled_after
    tasks.warm_up()
    # Started again when it stops by itself (the database restarted); SIGINT/SIGTERM stop it for good.
    run_jobs(
        url, concurrency=concurrency, queues=queues, name=f"{socket.gethostname()}:{os.getpid()}",
        update_heartbeat_interval=heartbeat, stalled_worker_timeout=stalled_after,
        # The ledger, not the job table, is the record: finished jobs would only pile up (a tick a minute,
        # a stalled-job check every 5 s, a job per 1,000 recipients). Failed ones stay, to be looked at.
        delete_jobs="successful",
    )


def run_scheduler() -> None:
    """`newsletter run` in scale mode: keep the schedule (defer what falls due, each minute) and leave the work
    itself to `newsletter worker` processes. Several may run; each minute is still handled once."""
    console.print("Scale mode: deferring scheduled collects and sends to the workers (Ctrl-C to stop).")
    run_worker(["schedule", "maintenance"])
