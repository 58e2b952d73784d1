"""`newsletter collect`: fetch every source, with a progress bar and a summary table."""

from __future__ import annotations

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from newsletter.cli.common import console, engine, fail, newsletters
from newsletter.collect.run import CollectReport, collect


def show_report(report: CollectReport) -> None:
    table = Table(title="Collected", show_lines=False)
    for col in ("source", "status", "new", "seen", "time", "problem"):
        table.add_column(col, overflow="fold")
    style = {"ok": "green", "not-modified": "cyan", "error": "red", "skipped": "yellow", "gone": "red"}
    for o in report.outcomes:
        table.add_row(o.name, f"[{style.get(o.status, '')}]{o.status}[/]", str(o.new_items), str(o.seen_items),
                      f"{o.seconds:.2f}s", o.error or o.warning or "")
    console.print(table)
    console.print(f"{report.new_items} new items from {len(report.outcomes)} sources; "
                  f"{len(report.failed)} failed, {len(report.backing_off)} backing off after failures"
                  + (f", {len(report.gone)} gone (410)" if report.gone else "") + ".")


def register(app: typer.Typer) -> None:
    @app.command("collect")
    def collect_cmd(
        slugs: list[str] = typer.Argument(None, help="Newsletters to collect for (default: all)."),
        force: bool = typer.Option(False, "--force", help="Also fetch sources that are backing off after errors."),
    ) -> None:
        """Fetch the feeds of the given newsletters (all by default) and store new items.

        Example: `newsletter collect ai-weekly`
        """
        known = newsletters()
        if slugs:
            missing = [s for s in slugs if s not in known]
            if missing:
                fail(f"unknown newsletter(s): {', '.join(missing)} (known: {', '.join(sorted(known)) or 'none'})")
            chosen = [known[s] for s in slugs]
        else:
            chosen = list(known.values())
        if not chosen:
            fail("no newsletters: add a schedule file with `newsletter init SLUG`")
        with Progress(TextColumn("collecting"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=True) as bar:
            task = bar.add_task("collect", total=None)
            report = collect(
                engine(), chosen, force=force,
                on_start=lambda n: bar.update(task, total=n),
                progress=lambda _url: bar.advance(task),
            )
        show_report(report)
