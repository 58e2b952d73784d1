"""`newsletter send`: deliver an issue to its audience, once."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from newsletter.cli.common import console, engine, fail, newsletter, settings
from newsletter.cli.render import print_report
from newsletter.compose.build import BuildError, resolve_issue
from newsletter.config import ConfigError
from newsletter.deliver.audience import empty_audience_hint, fresh_audience
from newsletter.deliver.engine import UNKNOWN_POLICIES, SendOptions, SendProgress
from newsletter.deliver.errors import SendError
from newsletter.deliver.factory import make_mailer
from newsletter.deliver.mailer import DeliveryError
from newsletter.deliver.preflight import preflight_issue
from newsletter.deliver.send import (
    SendReport,
    default_concurrency,
    recent_scheduled_send,
    send_issue,
    send_test,
    stop_on_ctrl_c,
)
from newsletter.render.engine import TemplateError
from newsletter.store.db import session_scope


def register(app: typer.Typer) -> None:
    @app.command("send")
    def send_cmd(
        slug: str = typer.Argument(..., help="The newsletter."),
        issue_id: int = typer.Option(None, "--issue", help="Issue id (default: the latest issue)."),
        test_to: str = typer.Option(None, "--test-to", help="Send only to this address; the ledger is untouched."),
        rate: float = typer.Option(None, "--rate", help="At most this many messages per second "
                                   "(default: NEWSLETTER_SEND_RATE, else unlimited)."),
        unknown: str = typer.Option("hold", "--unknown", help="Your decision for the held batches the last run "
                                    "listed (their outcome could not be found out): resend (risk: a second copy) "
                                    "or skip (risk: they miss it; recorded as skipped, not sent). It applies to "
                                    "those batches only; one that goes unknown during this run is held again. "
                                    "Default: hold."),
        force: bool = typer.Option(False, "--force", help="Send even when the preflight check fails, when no one "
                                   "is subscribed (the issue is then marked sent, to nobody), or when a scheduled "
                                   "issue went out less than one send period ago (readers get a second digest)."),
        batch_size: int = typer.Option(None, "--batch-size", min=1, max=1000, help="Recipients per batch "
                                       "(default 1000, SMTP 50); a resumed send keeps the size it started with."),
    ) -> None:
        """Send an issue to every active subscriber, exactly once; run it again to resume.

        Example: `newsletter send ai-weekly` or `newsletter send ai-weekly --test-to me@example.com`
        """
        nl = newsletter(slug)
        eng = engine()
        try:
            mailer = make_mailer(settings())
        except ConfigError as exc:
            fail(str(exc))
        with session_scope(eng) as session:
            try:
                issue = resolve_issue(session, slug, issue_id)
            except BuildError as exc:
                fail(str(exc))
        try:
            _, checks = preflight_issue(eng, nl, issue.id, issue.number, settings())
        except TemplateError as exc:
            fail(str(exc))
        if checks.failed and not test_to:
            print_report(checks)
            if not force:
                fail("preflight failed: the send is held. Fix the issue or template, or send with --force.")
        try:
            if test_to:
                from newsletter.subscribers.manage import InvalidAddress, normalize_email

                try:
                    address = normalize_email(test_to)
                except InvalidAddress as exc:
                    fail(f"--test-to: {exc}")
                send_test(nl, issue.id, eng, mailer, settings(), address)
                console.print(f"Sent a test of issue #{issue.number} to {address} via {mailer.name}.")
                return
            audience = fresh_audience(eng, issue.id, nl)
            if audience is False and not force:
                fail(f"nobody would get issue #{issue.number}: {slug} has no active subscribers. Nothing was sent "
                     f"and the issue is unchanged; {empty_audience_hint(slug)}, then send again "
                     "(--force sends it to nobody and marks it sent).")
            if unknown not in UNKNOWN_POLICIES:
                fail(f"--unknown must be one of {', '.join(UNKNOWN_POLICIES)}")
            second = None if force else recent_scheduled_send(eng, nl, issue.id)
            if second:
                fail(second)
            if rate is not None and rate <= 0:
                fail("--rate must be a positive number of messages per second")
            stop = threading.Event()
            with Progress(TextColumn("sending"), BarColumn(), MofNCompleteColumn(),
                          TextColumn("{task.fields[info]}"), console=console, transient=True) as bar:
                task = bar.add_task("send", total=None, info="")

                def show(p: SendProgress) -> None:
                    eta = f", ETA {_duration(p.eta)}" if p.eta is not None and p.remaining else ""
                    info = f"{p.remaining} left, {p.rate:,.0f}/s{eta}"
                    if stop.is_set():
                        info += " (stopping after this batch; Ctrl-C again to stop now)"
                    if p.note:
                        info += f" [{p.note}]"
                    bar.update(task, completed=p.sent, total=p.total, info=info)

                options = SendOptions(rate=rate if rate is not None else settings().send_rate, unknown=unknown,
                                      stop=stop, progress=show, concurrency=default_concurrency(mailer),
                                      batch_size=batch_size)
                with stop_on_ctrl_c(stop):
                    report = send_issue(eng, nl, issue.id, mailer, settings(), options=options)
        except (SendError, TemplateError) as exc:
            fail(str(exc))
        except DeliveryError as exc:
            fail(f"delivery stopped: {str(exc).rstrip('.')}. Nothing is lost: fix the cause and run the same "
                 "command again to resume.")
        finally:
            mailer.close()
        if report.decided:
            console.print(f"Decided --unknown {report.decided} for held batch(es) "
                          f"{', '.join(map(str, report.decided_batches))} ({report.decided_recipients} recipients"
                          + (": not sent again, recorded as skipped)." if report.decided == "skip"
                             else ": sent again).") , highlight=False)
        elif unknown != "hold":
            console.print(f"--unknown {unknown}: no held batch was listed to decide; nothing was decided.",
                          highlight=False)
        if report.status == "stopped":
            console.print(f"Stopped: {report.sent_before + report.sent_now} of {report.total} sent. "
                          f"Run `newsletter send {slug}` again to resume.")
            raise typer.Exit(130)
        if report.status == "held":
            others = _tally(report)
            console.print(f"[yellow]Held:[/] {report.held_recipients} recipients in batch(es) "
                          f"{', '.join(map(str, report.held_batches))} may or may not have received the issue "
                          f"(the provider's answer was lost and it cannot be asked). Everyone else was sent it"
                          f"{f' (but: {others[2:]})' if others else ''}. Decide for these batches with "
                          f"`newsletter send {slug} --unknown resend` (they may get a second copy) or "
                          "`--unknown skip` (they may miss this issue).", highlight=False)
            raise typer.Exit(3)
        if report.status == "waiting" and report.next_at is not None:
            next_at = datetime.fromtimestamp(report.next_at, UTC)
            console.print(f"Sent issue #{issue.number} of {slug} to the readers whose send time has come: "
                          f"{report.sent_before + report.sent_now} of {report.total}. The others get it at the "
                          f"send time in their own time zones, the next group at {next_at:%Y-%m-%d %H:%M} UTC: "
                          f"`newsletter run` releases each group then (or run this again then).", highlight=False)
            return
        if report.status == "already-sent":
            console.print(f"Issue #{issue.number} was already sent to {report.total} subscribers; nothing to do.")
            return
        console.print(f"Sent issue #{issue.number} of {slug}: {report.sent_now} now"
                      + (f", {report.sent_before} before" if report.sent_before else "")
                      + f"{_tally(report)}, {report.total} in the audience, via {mailer.name}.", highlight=False)
        if mailer.name == "outbox":
            console.print(f"Outbox: {settings().outbox_dir.resolve() / slug}")


def _tally(report: SendReport) -> str:
    """The people of the audience who were not sent it, and why: nobody is an unexplained gap."""
    parts = []
    if report.skipped:
        parts.append(f"{report.skipped} skipped (your --unknown skip: not sent, no delivery recorded)")
    if report.left_during:
        parts.append(f"{report.left_during} unsubscribed during the send")
    return "".join(f", {p}" for p in parts)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
