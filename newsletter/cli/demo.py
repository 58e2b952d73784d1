"""`newsletter demo`: see the whole job work, offline, in one command."""

from __future__ import annotations

from pathlib import Path

import typer

from newsletter.cli.collect import show_report
from newsletter.cli.common import console


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo_cmd(
        folder: Path = typer.Option(Path("newsletter-demo"), "--dir", help="Where the demo keeps its files."),
    ) -> None:
        """Collect sample feeds, build an issue, render it and deliver it to the local outbox. Offline.

        Example: `newsletter demo`, then open the printed preview in a browser.
        """
        from newsletter.demo.run import run_demo

        result = run_demo(folder)
        show_report(result.collect)
        for problem in result.problems:
            console.print(f"[yellow]note:[/] {problem}", highlight=False)
        console.print(f"\nBuilt issue {result.issue_id} with {result.stories} stories and sent it to "
                      f"{result.send.total} demo subscribers.")
        console.print(f"HTML preview: {result.html_path}")
        console.print(f"Text part:    {result.text_path}")
        console.print("Outbox:")
        for path in result.eml_paths:
            console.print(f"  {path}")
        console.print(f"\nNext: `newsletter init my-digest` to start your own (database and outbox of the demo "
                      f"live in {result.folder}).")
