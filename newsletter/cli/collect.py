"""`newsletter collect`: fetch every source, with a progress bar and a summary table."""

from __future__ import annotations

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from newsletter.cli.common import console, engine, fail, newsletters, settings
from newsletter.collect.run import CollectReport, collect


def show_report(report: CollectReport) -> None:
    table = Table(title="Collected", show_lines=False)
    for col in ("source", "status", "new", "seen", "time", "problem"):
        table.add_column(col, overflow="fold")
    style = {"ok": "green", "not-modified": "cyan", "error": "red", "skipped": "yellow"}
    for o in report.outcomes:
        # A failing row names its URL: the name alone does not say which address to fix.
        name = escape(o.name) + (f"\n[dim]{escape(o.url)}[/]" if o.status in ("error", "skipped") and o.url != o.name
                                 else "")
        table.add_row(name, f"[{style.get(o.status, '')}]{o.status}[/]", str(o.new_items), str(o.seen_items),
                      f"{o.seconds:.2f}s", escape(o.error or o.warning or ""))
    console.print(table)
    backing_off = [o for o in report.outcomes if o.status == "skipped"]
    footer = f"{report.new_items} new items from {len(report.outcomes)} sources; {len(report.failed)} failed"
    if backing_off:
        footer += (f", {len(backing_off)} not fetched (backing off after earlier failures; "
                   "`--force` tries them now)")
    console.print(footer + ".", highlight=False)


def exit_code(report: CollectReport) -> int:
    """0 when at least one source answered (new items or not); 1 when none did: every source failed or is
    backing off, so nothing could be collected (a cron job should hear about that)."""
    answered = [o for o in report.outcomes if o.status in ("ok", "not-modified")]
    return 0 if answered or not report.outcomes else 1


def register(app: typer.Typer) -> None:
    @app.command("collect")
    def collect_cmd(
        slugs: list[str] = typer.Argument(None, help="Newsletters to collect for (default: all)."),
        force: bool = typer.Option(False, "--force", help="Also fetch sources that are backing off after errors."),
    ) -> None:
        """Fetch the feeds of the given newsletters (all by default) and store new items.

        Exits 0 when at least one source answered, 1 when none did (all failed or backing off).
        Example: `newsletter collect ai-weekly`
        """
        known = newsletters()
        if slugs:
            missing = [s for s in slugs if s not in known]
            broken = [s for s in missing if (settings().schedules_dir / f"{s}.toml").exists()]
            if broken:  # its errors were just printed: "unknown" would be a second, false one
                fail(f"{', '.join(f'{settings().schedules_dir}/{s}.toml' for s in broken)} did not load (see the "
                     "warning above): fix it, then collect again")
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
        raise typer.Exit(exit_code(report))
