"""`newsletter check` and `newsletter preview`: look at the rendered email before anyone gets it."""

from __future__ import annotations

import json
import webbrowser
from pathlib import Path

import typer

from newsletter.cli.common import console, engine, fail, newsletter, settings
from newsletter.config import Newsletter
from newsletter.render.check import Report, preflight
from newsletter.render.engine import Rendered, TemplateError


def _templates_dir() -> Path | None:
    folder = settings().templates_dir
    return folder if folder.is_dir() else None


def _load(slug: str, issue_id: int | None) -> tuple[Newsletter, int, int, Rendered]:
    """The newsletter, the issue's id and number, and the issue rendered as it would be sent."""
    from newsletter.compose.build import BuildError, resolve_issue
    from newsletter.render.cache import rendered_issue
    from newsletter.store.db import session_scope

    nl = newsletter(slug)
    eng = engine(existing=True)
    with session_scope(eng) as session:
        try:
            issue = resolve_issue(session, slug, issue_id)
        except BuildError as exc:
            fail(str(exc))
        number = issue.number
        found = issue.id
    try:
        rendered = rendered_issue(eng, found, nl, base_url=settings().base_url, templates_dir=_templates_dir())
    except TemplateError as exc:
        fail(str(exc))
    return nl, found, number, rendered


def run_preflight(slug: str, issue_id: int | None) -> tuple[Newsletter, int, Rendered, Report]:
    from newsletter.deliver.preflight import sample_headers

    nl, found, number, rendered = _load(slug, issue_id)
    headers = sample_headers(nl, rendered, found, number, settings().base_url)
    report = preflight(rendered, headers=headers)
    if settings().preflight_sender:
        from newsletter.deliver.sender import check_sender

        report.findings += check_sender(nl, settings()).findings
    return nl, number, rendered, report


def print_report(report: Report) -> None:
    style = {"fail": "bold red", "warn": "yellow", "ok": "green"}
    for f in sorted(report.findings, key=lambda f: {"fail": 0, "warn": 1, "ok": 2}[f.level]):
        console.print(f"[{style[f.level]}]{f.level.upper():4}[/] {f.code}: {f.message}", highlight=False,
                      soft_wrap=True)
    console.print(f"[bold]{report.summary()}[/]", highlight=False)


def register(app: typer.Typer) -> None:
    @app.command("check")
    def check_cmd(
        slug: str = typer.Argument(..., help="The newsletter."),
        issue_id: int = typer.Option(None, "--issue", help="Issue id (default: the latest issue)."),
        as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
        sender: bool = typer.Option(False, "--sender", help="Check the From domain's DNS instead: SPF for the "
                                    "relay, the DKIM record against your key, DMARC and its alignment, BIMI."),
        unsubscribe: bool = typer.Option(False, "--unsubscribe", help="Post the RFC 8058 one-click request to "
                                         "NEWSLETTER_BASE_URL for a test subscriber and confirm it is suppressed "
                                         "at once (needs `newsletter serve` there)."),
    ) -> None:
        """Preflight the rendered issue: size against Gmail's clipping, links, images, CSS support,
        unsubscribe link and headers. Exits 1 when a check fails, so a schedule can hold the send.

        Example: `newsletter check ai-weekly`, `newsletter check ai-weekly --sender`
        """
        if sender or unsubscribe:
            report = Report(name=" and ".join(n for n, on in (("sender checks", sender),
                                                            ("one-click unsubscribe check", unsubscribe)) if on))
            if sender:
                from newsletter.deliver.sender import check_sender

                report.findings += check_sender(newsletter(slug), settings()).findings
            if unsubscribe:
                from newsletter.deliver.unsubscribe_check import check_unsubscribe

                report.findings += check_unsubscribe(engine(), newsletter(slug), settings()).findings
        else:
            _, _, _, report = run_preflight(slug, issue_id)
        if as_json:
            typer.echo(json.dumps(report.to_json(), indent=2))
        else:
            print_report(report)
        if report.failed:
            raise typer.Exit(1)

    @app.command("preview")
    def preview_cmd(
        slug: str = typer.Argument(..., help="The newsletter."),
        issue_id: int = typer.Option(None, "--issue", help="Issue id (default: the latest issue)."),
        out: Path = typer.Option(None, "--out", help="Folder to write to (default: preview/SLUG-NUMBER)."),
        open_browser: bool = typer.Option(False, "--open", help="Open the preview in the web browser."),
    ) -> None:
        """Write the HTML and text parts and a page showing them at desktop and phone width, in dark mode,
        with the preflight report.

        Example: `newsletter preview ai-weekly --open`
        """
        from newsletter.render.preview import write_preview

        nl, number, rendered, report = run_preflight(slug, issue_id)
        folder = out or Path("preview") / f"{slug}-{number}"
        paths = write_preview(rendered, report, folder, title=f"{nl.name} · issue {number}",
                              base_url=settings().base_url)
        console.print(f"Preview of issue #{number}: {paths.index.resolve()}", highlight=False, soft_wrap=True)
        console.print(f"  HTML {paths.html}  ·  text {paths.text}  ·  {report.summary()}", highlight=False)
        if open_browser:
            webbrowser.open(paths.index.resolve().as_uri())
