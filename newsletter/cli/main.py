"""The `newsletter` command. Each group of subcommands lives in its own module and registers itself here."""

from __future__ import annotations

import importlib

import typer

from newsletter import __version__

app = typer.Typer(
    name="newsletter",
    help="Turn the web's feeds into a weekly email digest, and deliver it reliably.\n\n"
    "Start with `newsletter demo`, then `newsletter init SLUG`.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
    pretty_exceptions_show_locals=False,  # locals may hold secrets
)

# One module per group of commands; each defines register(app).
COMMAND_MODULES = [
    "newsletter.cli.setup",
    "newsletter.cli.collect",
    "newsletter.cli.sources",
    "newsletter.cli.issues",
    "newsletter.cli.approval",
    "newsletter.cli.schedule",
    "newsletter.cli.send",
    "newsletter.cli.subscribers",
    "newsletter.cli.demo",
    "newsletter.cli.render",
    "newsletter.cli.scale",
    "newsletter.cli.web",
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"newsletter {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    pass


for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def main() -> None:
    app()
