"""`newsletter subscribers ...`: add (optionally with double opt-in), import, export, list, confirm, unsubscribe,
forget (a reader's recorded events)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.table import Table

from newsletter.cli.common import console, engine, fail, newsletter, settings
from newsletter.deliver.optin import request_opt_in
from newsletter.store.db import ensure_newsletter, secret_key, session_scope
from newsletter.subscribers import status as subscription_status
from newsletter.subscribers.manage import (
    InvalidAddress,
    add_subscriber,
    export_csv,
    find_subscriber_id,
    import_csv,
    list_subscriptions,
    normalize_email,
)

NEWSLETTER_OPT = typer.Option(..., "--newsletter", "-n", help="The newsletter's slug.")


def register(app: typer.Typer) -> None:
    sub_app = typer.Typer(help="Manage subscribers.", no_args_is_help=True)
    app.add_typer(sub_app, name="subscribers")

    @sub_app.command("add")
    def add_cmd(
        email: str = typer.Argument(..., help="The address."),
        slug: str = NEWSLETTER_OPT,
        name: str = typer.Option(None, "--name", help="The person's name."),
        opt_in: bool = typer.Option(False, "--opt-in", help="Double opt-in: subscribe as pending and email "
                                    "a confirmation link (valid 7 days) through the configured mailer."),
    ) -> None:
        """Subscribe one address. Example: `newsletter subscribers add ann@example.com -n ai-weekly`"""
        nl = newsletter(slug)
        if opt_in:
            _opt_in(nl, slug, email, name)
            return
        with session_scope(engine()) as session:
            row = ensure_newsletter(session, nl.slug, nl.name)
            try:
                result = add_subscriber(session, row, email, name=name)
            except InvalidAddress as exc:
                fail(f"{email}: {exc}")
        messages = {"added": "subscribed", "exists": "already subscribed",
                    "suppressed": "NOT subscribed: the address unsubscribed, bounced or complained before"}
        console.print(f"{result.email}: {messages[result.status]}")

    @sub_app.command("import")
    def import_cmd(
        path: Path = typer.Argument(..., exists=True, dir_okay=False, help="CSV with an 'email' column."),
        slug: str = NEWSLETTER_OPT,
    ) -> None:
        """Import subscribers from CSV (email, name, sections, frequency, tz, any other columns). Bad rows are
        reported, the rest kept; `sections` lists the sections a new reader gets, separated by ';'.

        Example: `newsletter subscribers import people.csv -n ai-weekly`
        """
        nl = newsletter(slug)
        with session_scope(engine()) as session:
            row = ensure_newsletter(session, nl.slug, nl.name)
            try:
                report = import_csv(session, row, path, nl=nl)
            except (InvalidAddress, UnicodeDecodeError) as exc:
                fail(str(exc))
        for problem in report.problems:
            console.print(f"[yellow]{path}: line {problem.row}:[/] {problem.value!r}: {problem.reason}",
                          highlight=False, soft_wrap=True)
        console.print(f"{report.added} added, {report.existing} already subscribed, "
                      f"{report.suppressed} suppressed, {len(report.problems)} rejected.")

    @sub_app.command("list")
    def list_cmd(
        slug: str = NEWSLETTER_OPT,
        status: str = typer.Option(None, "--status", help="Only this status (active, pending, unsubscribed...)."),
    ) -> None:
        """List subscribers. Example: `newsletter subscribers list -n ai-weekly --status active`"""
        nl = newsletter(slug)
        table = Table()
        for col in ("email", "name", "status", "since"):
            table.add_column(col)
        with session_scope(engine(existing=True)) as session:
            row = ensure_newsletter(session, nl.slug, nl.name)
            rows = list_subscriptions(session, row, status)
        for email, name, state, created in rows:
            table.add_row(email, name or "", state, f"{created:%Y-%m-%d}")
        console.print(table)
        console.print(f"{len(rows)} subscribers")

    @sub_app.command("export")
    def export_cmd(
        slug: str = NEWSLETTER_OPT,
        output: Path = typer.Option(None, "--output", "-o", help="CSV file to write (default: standard output)."),
        status: str = typer.Option(None, "--status", help="Only this status (active, pending, unsubscribed...)."),
    ) -> None:
        """Export subscribers as CSV (email, name, status, dates, imported fields); re-importable.

        Example: `newsletter subscribers export -n ai-weekly -o subscribers.csv`
        """
        nl = newsletter(slug)
        with session_scope(engine(existing=True)) as session:
            row = ensure_newsletter(session, nl.slug, nl.name)
            if output is None:
                export_csv(session, row, sys.stdout, status)
                return
            tmp = output.with_name(output.name + ".tmp")
            with tmp.open("w", encoding="utf-8", newline="") as out:
                count = export_csv(session, row, out, status)
            tmp.replace(output)  # never leave a half-written export behind
        console.print(f"{count} subscribers written to {output}")

    @sub_app.command("confirm")
    def confirm_cmd(email: str = typer.Argument(..., help="The address."), slug: str = NEWSLETTER_OPT,
                    welcome: bool = typer.Option(True, "--welcome/--no-welcome",
                                                 help="Send the welcome email (once per subscription).")) -> None:
        """Confirm a pending subscription by hand (e.g. consent given on paper), then welcome them.

        Example: `newsletter subscribers confirm ann@example.com -n ai-weekly`
        """
        nl = newsletter(slug)
        with session_scope(engine()) as session:
            row = ensure_newsletter(session, nl.slug, nl.name)
            subscriber_id = _subscriber(session, email)
            result = subscription_status.confirm(session, subscriber_id, row.id)
        if result is None:
            fail(f"{email} has no subscription to {slug}")
        if result != "active":
            fail(f"{email} stays {result}: the address bounced or complained and is suppressed")
        console.print(f"{email}: active")
        if welcome:
            _welcome(nl, subscriber_id, email)

    @sub_app.command("preferences")
    def preferences_cmd(
        email: str = typer.Argument(..., help="The address."),
        slug: str = NEWSLETTER_OPT,
        sections: str = typer.Option(None, "--sections", help="The sections they get, separated by ';' "
                                     "(the rest are turned off); '' for all of them."),
        frequency: str = typer.Option(None, "--frequency", help="One of the newsletter's cadences."),
        tz: str = typer.Option(None, "--tz", help="Their IANA time zone (e.g. Asia/Tokyo); '' for the "
                               "newsletter's own."),
        format: str = typer.Option(None, "--format", help="html (an HTML and a text part) or text."),
        pause_weeks: int = typer.Option(None, "--pause-weeks", min=0, max=52, help="Pause for N weeks; 0 resumes."),
        history: bool = typer.Option(False, "--history", help="Also list every change, with its time and origin."),
    ) -> None:
        """Show a subscriber's choices, or change them (from their next issue; each change is recorded).

        Example: `newsletter subscribers preferences ann@example.com -n ai-weekly --sections "AI;Open source"`
        """
        from newsletter.subscribers import preferences

        nl = newsletter(slug)
        values: dict[str, object] = {}
        if sections is not None:
            on = preferences.parse_sections(sections)
            values["sections_off"] = [s for s in nl.sections if s not in on] if on else []
            unknown = [s for s in on if s not in nl.sections]
            if unknown:
                fail(f"--sections: {unknown[0]!r} is not a section of {slug} "
                     f"(its sections: {', '.join(nl.sections) or 'none'})")
        for name, value in (("frequency", frequency), ("timezone", tz), ("format", format),
                            ("pause_weeks", pause_weeks)):
            if value is not None:
                values[name] = value
        with session_scope(engine()) as session:
            row = ensure_newsletter(session, nl.slug, nl.name)
            try:
                sub = preferences.subscription_of(session, row.id, normalize_email(email))
            except InvalidAddress as exc:
                fail(f"{email}: {exc}")
            if sub is None:
                fail(f"{email} has no subscription to {slug}")
            try:
                changed = preferences.apply(session, sub, nl, values, origin="cli") if values else []
            except preferences.PreferenceError as exc:
                fail(f"{email}: {exc}; nothing was changed")
            shown = preferences.of(sub)
            changes = preferences.history(session, sub.id) if history else []
            lines = [f"{email} ({sub.status})",
                     f"  sections: {', '.join(s for s in nl.sections if s not in shown.sections_off) or 'none'}"
                     + (f" (off: {', '.join(shown.sections_off)})" if shown.sections_off else "")
                     if nl.sections else "  sections: (this newsletter has none)",
                     f"  frequency: {shown.frequency or (nl.cadence_names[0] if nl.cadence_names else 'the one')}",
                     f"  time zone: {shown.timezone or nl.schedule.timezone + ' (the newsletter' + chr(39) + 's)'}",
                     f"  format: {shown.format}",
                     f"  paused until: {shown.paused_until:%Y-%m-%d %H:%M} UTC" if shown.paused_until
                     else "  not paused"]
            lines += [f"  {c.changed_at:%Y-%m-%d %H:%M:%S} {c.origin or '?'}: {c.field} {c.old!r} -> {c.new!r}"
                      for c in changes]
        if values:
            console.print(f"changed: {', '.join(changed)}" if changed else "nothing changed")
        console.print("\n".join(lines), markup=False, highlight=False)

    @sub_app.command("unsubscribe")
    def unsubscribe_cmd(email: str = typer.Argument(..., help="The address."), slug: str = NEWSLETTER_OPT) -> None:
        """Unsubscribe an address; it stays suppressed even if a later import lists it again.

        Example: `newsletter subscribers unsubscribe ann@example.com -n ai-weekly`
        """
        nl = newsletter(slug)
        with session_scope(engine()) as session:
            row = ensure_newsletter(session, nl.slug, nl.name)
            changes = subscription_status.set_status(session, _subscriber(session, email), row.id, "unsubscribed")
        if not changes:
            fail(f"{email} has no subscription to {slug}")
        console.print(f"{email}: {changes[0].status}" + ("" if changes[0].changed else " (already)"))

    @sub_app.command("forget")
    def forget_cmd(email: str = typer.Argument(..., help="The address.")) -> None:
        """A reader's deletion request for what was recorded about them: removes every click, open and provider
        event of theirs (the report's daily totals, which name nobody, stay). Their subscriptions are left as
        they are: `subscribers unsubscribe` stops the mail.

        Example: `newsletter subscribers forget ann@example.com`
        """
        from sqlalchemy import delete, func

        from newsletter.render.tracking import TrackSigner
        from newsletter.report.retention import forget
        from newsletter.store.models import Event
        from newsletter.subscribers.tokens import Signer

        with session_scope(engine()) as session:
            subscriber_id = _subscriber(session, email)
            signer = TrackSigner(Signer(secret_key(session, settings().secret_key)).subkey("tracking"))
            tracked = forget(session, subscriber_id, signer)
            provider = session.execute(delete(Event).where(func.lower(Event.email) == email.strip().lower()))
            removed = tracked + int(getattr(provider, "rowcount", 0) or 0)
        console.print(f"{email}: {removed} event(s) removed")


def _subscriber(session, email: str) -> int:  # noqa: ANN001
    try:
        subscriber_id = find_subscriber_id(session, email)
    except InvalidAddress as exc:
        fail(f"{email}: {exc}")
    if subscriber_id is None:
        fail(f"{email} is not a subscriber")
    return subscriber_id


def _opt_in(nl, slug: str, email: str, name: str | None) -> None:  # noqa: ANN001
    from newsletter.config import ConfigError
    from newsletter.deliver.factory import make_mailer
    from newsletter.deliver.mailer import DeliveryError

    try:
        mailer = make_mailer(settings())
    except ConfigError as exc:
        fail(str(exc))
    try:
        with session_scope(engine()) as session:
            row = ensure_newsletter(session, nl.slug, nl.name)
            secret = secret_key(session, settings().secret_key)
            result = request_opt_in(session, row, nl, email, mailer, base_url=settings().base_url, secret=secret,
                                    name=name, origin="cli")
    except InvalidAddress as exc:
        fail(f"{email}: {exc}")
    except DeliveryError as exc:
        fail(f"{email}: the confirmation email could not be sent ({exc}); nothing was changed")
    finally:
        mailer.close()
    messages = {"confirmation-sent": f"pending: a confirmation link was sent via {mailer.name}",
                "already-active": "already subscribed", "suppressed": "NOT subscribed: the address bounced or "
                "complained before"}
    console.print(f"{result.email}: {messages[result.status]}")


def _welcome(nl, subscriber_id: int, email: str) -> None:  # noqa: ANN001
    from newsletter.config import ConfigError
    from newsletter.deliver.factory import make_mailer
    from newsletter.deliver.welcome import send_welcome

    try:
        mailer = make_mailer(settings())
    except ConfigError as exc:
        fail(str(exc))
    try:
        result = send_welcome(engine(), nl, subscriber_id, mailer, settings())
    finally:
        mailer.close()
    if result.status == "sent":
        console.print(f"{email}: welcome email sent via {mailer.name}")
    elif result.status == "already":
        console.print(f"{email}: welcomed before (not sent again)")
    elif result.status in ("failed", "unknown"):
        fail(f"{email}: the welcome email {'could not be sent' if result.status == 'failed' else 'may not have gone'}"
             f" ({result.error}); it is not sent again")
