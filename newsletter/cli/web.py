"""`newsletter serve` and `newsletter editors ...`: the web app and the accounts that sign in to it."""

from __future__ import annotations

import os
import sys

import typer

from newsletter.cli.common import console, engine, fail, settings


def _env_port() -> int:
    raw = os.environ.get("NEWSLETTER_PORT", "8000")
    try:
        port = int(raw)
    except ValueError:
        fail(f"NEWSLETTER_PORT: {raw!r} is not a port number")
    if not 0 < port < 65536:
        fail(f"NEWSLETTER_PORT: {port} is not a port number (1-65535)")
    return port


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve_cmd(
        host: str = typer.Option(None, "--host", help="Address to listen on [env NEWSLETTER_HOST; 127.0.0.1]."),
        port: int = typer.Option(None, "--port", help="Port [env NEWSLETTER_PORT; 8000]."),
    ) -> None:
        """Serve the editors' workspace, the public archive, the API and the subscription pages.

        Links in emails and the archive use NEWSLETTER_BASE_URL; put the app behind an https proxy there.
        Example: `NEWSLETTER_BASE_URL=https://news.example.com newsletter serve --port 8000`
        """
        import uvicorn

        from newsletter.web.app import create_app
        from newsletter.web.logs import uvicorn_log_config

        host = host or os.environ.get("NEWSLETTER_HOST") or "127.0.0.1"
        port = port or _env_port()
        web = create_app(settings(), engine=engine())
        console.print(f"Serving on http://{host}:{port} (public address {settings().base_url}); "
                      f"editors sign in at {settings().base_url}/signin")
        # The proxy in front sets X-Forwarded-For; only trust it from the loopback proxy uvicorn defaults to.
        uvicorn.run(web, host=host, port=port, proxy_headers=True, log_level="info", server_header=False,
                    log_config=uvicorn_log_config())

    editors = typer.Typer(help="Editors: the accounts that sign in to the workspace and use the API.",
                          no_args_is_help=True)
    app.add_typer(editors, name="editors")

    @editors.command("add")
    def add_cmd(
        email: str = typer.Argument(..., help="The editor's email address (they sign in with it)."),
        password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from standard input."),
    ) -> None:
        """Add an editor, or set a new password for one (which also lifts a sign-in lock).

        Example: `newsletter editors add ann@example.com` (asks for the password twice)
        """
        from newsletter.store.db import session_scope
        from newsletter.web.auth import AuthError, create_editor

        if password_stdin:
            password = sys.stdin.readline().rstrip("\r\n")
        else:
            password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
        with session_scope(engine()) as session:
            try:
                editor = create_editor(session, email, password)
            except AuthError as exc:
                fail(str(exc))
            address = editor.email
        console.print(f"Editor {address} can sign in at {settings().base_url}/signin")

    @editors.command("token")
    def token_cmd(email: str = typer.Argument(..., help="The editor's email address.")) -> None:
        """Create an API token for an editor and print it once (only its hash is kept; a new one replaces the
        old). Example: `newsletter editors token ann@example.com`
        """
        from newsletter.store.db import session_scope
        from newsletter.web.auth import AuthError, issue_api_token

        with session_scope(engine()) as session:
            try:
                token = issue_api_token(session, email)
            except AuthError as exc:
                fail(str(exc))
        typer.echo(token)  # alone on stdout, so `TOKEN=$(newsletter editors token ...)` works
        typer.echo("Keep it secret: it is shown only now. Use it as `Authorization: Bearer TOKEN`.", err=True)

    @editors.command("list")
    def list_cmd() -> None:
        """List editors. Example: `newsletter editors list`"""
        from sqlalchemy import select

        from newsletter.store.db import session_scope
        from newsletter.store.models import Editor, utcnow

        with session_scope(engine()) as session:
            rows = session.scalars(select(Editor).order_by(Editor.email)).all()
            now = utcnow()
            for editor in rows:
                notes = []
                if editor.api_token_hash:
                    notes.append("has an API token")
                if editor.locked_until and editor.locked_until > now:
                    notes.append(f"sign-in locked until {editor.locked_until:%H:%M} UTC")
                console.print(f"{editor.email}" + (f"  ({', '.join(notes)})" if notes else ""), highlight=False)
        console.print(f"{len(rows)} editor(s)")
