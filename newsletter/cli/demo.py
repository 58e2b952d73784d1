"""`newsletter demo`: see the whole job work, offline, in one command."""

from __future__ import annotations

from pathlib import Path

import typer

from newsletter.cli.collect import show_report
from newsletter.cli.common import console, settings


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo_cmd(
        folder: Path = typer.Option(Path("newsletter-demo"), "--dir", help="Where the demo keeps its files."),
    ) -> None:
        """Collect sample feeds, build an issue, render it and deliver it to the local outbox. Offline.

        Example: `newsletter demo`, then open the printed preview in a browser.
        """
        from newsletter.demo.run import run_demo

        # The demo's links point at NEWSLETTER_BASE_URL when it is set (or NEWSLETTER_PORT's local address).
        result = run_demo(folder, base_url=settings().base_url)
        show_report(result.collect)
        for problem in result.problems:
            console.print(f"[yellow]note:[/] {problem}", highlight=False)
        console.print(f"\nBuilt issue {result.issue_id} with {result.stories} stories and sent it to "
                      f"{result.send.total} demo subscribers.")
        # Paths are never wrapped (soft_wrap): a path cut in two cannot be copied or clicked.
        console.print(f"HTML preview: {result.html_path}", soft_wrap=True, highlight=False)
        console.print(f"Text part:    {result.text_path}", soft_wrap=True, highlight=False)
        console.print("Outbox:")
        for path in result.eml_paths:
            console.print(f"  {path}", soft_wrap=True, highlight=False)
        console.print(f"\nNext: `newsletter init my-digest` to start your own (database and outbox of the demo "
                      f"live in {result.folder}).", soft_wrap=True, highlight=False)
