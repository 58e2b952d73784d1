"""The `newsletter` command. Each group of subcommands lives in its own module and registers itself here.

The command modules are loaded lazily: `COMMANDS` names every top-level command with the module(s) that define it
and the first paragraph of its help, so `newsletter --help` and shell completion of command names list them
without importing anything heavy; only the command actually invoked (or asked for its own `--help`) has its
module imported. tests/test_cli_lazy.py fails when this table and the modules disagree.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, NamedTuple

import typer
import typer.main
from typer.core import TyperCommand, TyperGroup

from newsletter import __version__

if TYPE_CHECKING:  # Typer's own copy of Click (importing the `click` package would cost 60 ms)
    from typer._click import Command, Context


class Entry(NamedTuple):
    modules: tuple[str, ...]  # each defines register(app); all are needed for the command to be complete
    help: str  # the first paragraph of the command's help, as `newsletter --help` lists it


# In the order `newsletter --help` lists them (Typer puts single commands before groups).
COMMANDS: dict[str, Entry] = {
    "init": Entry(("newsletter.cli.setup",),
                  "Scaffold a newsletter: writes a commented schedules/SLUG.toml to edit (never overwrites)."),
    "collect": Entry(("newsletter.cli.collect",),
                     "Fetch the feeds of the given newsletters (all by default) and store new items."),
    "build": Entry(("newsletter.cli.issues",),
                   "Build the next issue as a draft from the items collected in the window."),
    "run": Entry(("newsletter.cli.schedule",),
                 "Keep every newsletter on time: collect, build, check and send as the schedule files say."),
    "send": Entry(("newsletter.cli.send",),
                  "Send an issue to every active subscriber, exactly once; run it again to resume."),
    "demo": Entry(("newsletter.cli.demo",),
                  "Collect sample feeds, build an issue, render it and deliver it to the local outbox. Offline."),
    "check": Entry(("newsletter.cli.render",),
                   "Preflight the rendered issue: size against Gmail's clipping, links, images, CSS support, "
                   "unsubscribe link and headers. Exits 1 when a check fails, so a schedule can hold the send."),
    "preview": Entry(("newsletter.cli.render",),
                     "Write the HTML and text parts and a page showing them at desktop and phone width, in dark "
                     "mode, with the preflight report."),
    "worker": Entry(("newsletter.cli.scale",),
                    "Run a scale-mode worker: it takes jobs from the PostgreSQL queue until stopped "
                    "(Ctrl-C: graceful)."),
    "serve": Entry(("newsletter.cli.web",),
                   "Serve the editors' workspace, the public archive, the API and the subscription pages."),
    "report": Entry(("newsletter.cli.report",),
                    "What happened after the sends: delivered, bounced, complained, unsubscribed, clicks per story, "
                    "opens."),
    "db": Entry(("newsletter.cli.setup",), "Database maintenance."),
    "sources": Entry(("newsletter.cli.sources",),
                     "Feeds as collect knows them: status, permanent redirects, 410 Gone."),
    "issue": Entry(("newsletter.cli.issues", "newsletter.cli.approval"), "Look at, approve and hold issues."),
    "schedule": Entry(("newsletter.cli.schedule",), "See and run the schedules."),
    "subscribers": Entry(("newsletter.cli.subscribers",), "Manage subscribers."),
    "scale": Entry(("newsletter.cli.scale",), "Scale mode: hand work to `newsletter worker` processes."),
    "editors": Entry(("newsletter.cli.web",),
                     "Editors: the accounts that sign in to the workspace and use the API."),
    "readers": Entry(("newsletter.cli.readers",),
                     "Readers: the accounts that sign in by email link to comment on stories."),
    "dkim": Entry(("newsletter.cli.dkim",),
                  "DKIM: the key that signs your messages so receivers can tell they are yours."),
}

# One module per group of commands; each defines register(app). This order is the order of `newsletter --help`
# when every module is registered (tests/test_cli_lazy.py compares it with COMMANDS).
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
    "newsletter.cli.readers",
    "newsletter.cli.dkim",
    "newsletter.cli.report",
]

_registered: set[str] = set()  # register(app) adds to module-level Typer groups, so at most once per module


class _Placeholder(TyperCommand):
    """Stands in for a command not loaded yet: enough for help listings and completion of command names."""


class LazyGroup(TyperGroup):
    """The root group: lists `COMMANDS` from the table and imports a command's module when it is resolved."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        loaded = dict(self.commands)
        commands: dict[str, Command] = {}
        for name, entry in COMMANDS.items():
            # `issue` is registered by the module of `build` already, but complete only with approval's commands.
            complete = name in loaded and _registered.issuperset(entry.modules)
            commands[name] = loaded.pop(name) if complete else _Placeholder(name, help=entry.help)
            loaded.pop(name, None)
        commands.update(loaded)  # a command a module registers that the table lacks still works (the test fails)
        self.commands = commands

    def resolve_command(
        self, ctx: Context, args: list[str]
    ) -> tuple[str | None, Command | None, list[str]]:
        # Invoking a command, its --help, and completing its arguments all pass here; listings do not.
        if args and isinstance(self.commands.get(args[0]), _Placeholder):
            self.commands[args[0]] = load(args[0])
        return super().resolve_command(ctx, args)


app = typer.Typer(
    name="newsletter",
    cls=LazyGroup,
    help="Turn the web's feeds into a weekly email digest, and deliver it reliably.\n\n"
    "Start with `newsletter demo`, then `newsletter init SLUG`.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
    pretty_exceptions_show_locals=False,  # locals may hold secrets
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"newsletter {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    pass


def register_modules(modules: list[str] | tuple[str, ...]) -> None:
    """Import command modules and let each register its commands on `app` (once per process)."""
    for module in modules:
        if module not in _registered:
            importlib.import_module(module).register(app)
            _registered.add(module)


def load(name: str) -> Command:
    """The real click command for a top-level command name, importing only the modules it needs."""
    register_modules(COMMANDS[name].modules)
    # Converted from the whole app, so the command gets exactly the settings (markup mode, ...) it had eagerly.
    return typer.main.get_group(app).commands[name]


def main() -> None:
    app()
