"""`newsletter init` and `newsletter db upgrade`."""

from __future__ import annotations

import typer

from newsletter.cli.common import console, fail, require_postgres_driver, require_scale, settings
from newsletter.cli.scaffold import TEMPLATE
from newsletter.config import SLUG_RE, ConfigError, load_newsletter


def register(app: typer.Typer) -> None:
    @app.command("init")
    def init_cmd(
        slug: str = typer.Argument("my-digest", help="Short name: lowercase letters, digits, dashes."),
    ) -> None:
        """Scaffold a newsletter: writes a commented schedules/SLUG.toml to edit (never overwrites).

        Example: `newsletter init ai-weekly`, then edit schedules/ai-weekly.toml and run
        `newsletter collect ai-weekly`, `newsletter build ai-weekly`, `newsletter send ai-weekly`.
        """
        if not SLUG_RE.match(slug):
            fail(f"'{slug}' is not a valid slug: use lowercase letters, digits and dashes")
        folder = settings().schedules_dir
        path = folder / f"{slug}.toml"
        if path.exists():
            fail(f"{path} already exists; edit it, or choose another name")
        folder.mkdir(parents=True, exist_ok=True)
        name = slug.replace("-", " ").title()
        path.write_text(TEMPLATE.format(name=name, slug=slug), encoding="utf-8")
        try:
            load_newsletter(path)
        except ConfigError as exc:  # the template itself must always be valid
            fail(f"internal error, the scaffold does not validate: {exc}")
        console.print(f"Wrote {path}. Next: edit it, then `newsletter collect {slug}` and "
                      f"`newsletter build {slug}`.")

    db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
    app.add_typer(db_app, name="db")

    @db_app.command("upgrade")
    def upgrade_cmd(
        scale: bool = typer.Option(False, "--scale", help="Also create the job tables of scale mode "
                                   "(as NEWSLETTER_SCALE=1 does)."),
    ) -> None:
        """Create or upgrade the database schema (also done automatically on first use).

        Example: `NEWSLETTER_DATABASE_URL=postgresql+psycopg://localhost/news newsletter db upgrade`
        """
        from newsletter.config import redact_url
        from newsletter.store.db import current_revision, head_revision, make_engine, upgrade

        url = settings().database_url
        require_postgres_driver()
        scale_on = require_scale(scale)  # before touching the database: a missing extra is said first
        try:
            eng = make_engine(url)
            before = current_revision(eng)
            upgrade(eng)
        except Exception as exc:
            fail(f"cannot upgrade {redact_url(url)}: {exc}")
        after = head_revision()
        if before == after:
            console.print(f"{redact_url(url)} is up to date (revision {after}).")
        else:
            console.print(f"Upgraded {redact_url(url)} from {before or 'empty'} to {after}.")
        if scale_on:
            from newsletter.scale.app import ensure_schema

            try:
                created = ensure_schema(url)
            except Exception as exc:
                fail(f"cannot create the job tables in {redact_url(url)}: {exc}")
            console.print("Created the job tables (scale mode)." if created else "Job tables present (scale mode).")
