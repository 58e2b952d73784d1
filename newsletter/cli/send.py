"""`newsletter send`: deliver an issue to its audience, once."""

from __future__ import annotations

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from newsletter.build.build import BuildError, resolve_issue
from newsletter.cli.common import console, engine, fail, newsletter, settings
from newsletter.cli.render import print_report
from newsletter.config import ConfigError
from newsletter.deliver.factory import make_mailer
from newsletter.deliver.mailer import DeliveryError
from newsletter.deliver.preflight import preflight_issue
from newsletter.deliver.send import SendError, send_issue, send_test
from newsletter.render.engine import TemplateError
from newsletter.store.db import session_scope


def register(app: typer.Typer) -> None:
    @app.command("send")
    def send_cmd(
        slug: str = typer.Argument(..., help="The newsletter."),
        issue_id: int = typer.Option(None, "--issue", help="Issue id (default: the latest issue)."),
        test_to: str = typer.Option(None, "--test-to", help="Send only to this address; the ledger is untouched."),
        force: bool = typer.Option(False, "--force", help="Send even when the preflight check fails."),
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
            _, report = preflight_issue(eng, nl, issue.id, issue.number, settings())
        except TemplateError as exc:
            fail(str(exc))
        if report.failed and not test_to:
            print_report(report)
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
            with Progress(TextColumn("sending"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                          console=console, transient=True) as bar:
                task = bar.add_task("send", total=None)
                report = send_issue(eng, nl, issue.id, mailer, settings(),
                                    progress=lambda done, total: bar.update(task, completed=done, total=total))
        except (SendError, TemplateError) as exc:
            fail(str(exc))
        except DeliveryError as exc:
            fail(f"delivery stopped: {exc}. Nothing is lost: run the same command again to resume.")
        finally:
            mailer.close()
        if report.status == "already-sent":
            console.print(f"Issue #{issue.number} was already sent to {report.total} subscribers; nothing to do.")
            return
        console.print(f"Sent issue #{issue.number} of {slug}: {report.sent_now} now"
                      + (f", {report.sent_before} before" if report.sent_before else "")
                      + f", {report.total} in the audience, via {mailer.name}.")
        if mailer.name == "outbox":
            console.print(f"Outbox: {settings().outbox_dir.resolve() / slug}")
