"""`newsletter serve` and `newsletter editors ...`: the web app and the accounts that sign in to it."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import typer

from newsletter.cli.common import console, engine, fail, settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from newsletter.store.models import Editor


def _set_password(change: Callable[[Session, str, str], Editor], email: str, stdin: bool, prompt: str) -> str:
    """Read a password (from standard input, or asked twice) and give it to the editor; their address, or fail."""
    from newsletter.store.db import session_scope
    from newsletter.web.auth import AuthError

    if stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt(prompt, hide_input=True, confirmation_prompt=True)
    with session_scope(engine()) as session:
        try:
            editor = change(session, email, password)
        except AuthError as exc:
            fail(str(exc))
        return editor.email


def _env_port() -> int:
    raw = os.environ.get("NEWSLETTER_PORT", "8000")
    try:
        port = int(raw)
    except ValueError:
        fail(f"NEWSLETTER_PORT: {raw!r} is not a port number")
    if not 0 < port < 65536:
        fail(f"NEWSLETTER_PORT: {port} is not a port number (1-65535)")
    return port


def trusted_proxies(raw: str | None) -> list[str]:
    """NEWSLETTER_TRUSTED_PROXIES: the addresses or networks (comma-separated) whose X-Forwarded-For and
    X-Forwarded-Proto are believed. None by default: otherwise any client that can reach the port, loopback
    included, would choose the address the per-client limits see."""
    out = []
    for part in (raw or "").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            out.append(str(ipaddress.ip_network(part, strict=False)))
        except ValueError:
            fail(f"NEWSLETTER_TRUSTED_PROXIES: {part!r} is not an IP address or network (e.g. 10.0.0.5 or "
                 "10.0.0.0/24); list the proxies by address, not by name")
    return out


def uvicorn_options(host: str, port: int, proxies: list[str]) -> dict[str, Any]:
    """How `newsletter serve` runs uvicorn (the benchmark's floor app runs under the same options). uvicorn's
    access log is off: `served` wraps the app in our own (newsletter.web.logs.AccessLog), same lines, cheaper."""
    from newsletter.web.logs import uvicorn_log_config

    # uvicorn would trust FORWARDED_ALLOW_IPS or 127.0.0.1 by default: set both knobs from our setting only.
    return {"host": host, "port": port, "proxy_headers": bool(proxies), "forwarded_allow_ips": proxies or [],
            "log_level": "info", "server_header": False, "log_config": uvicorn_log_config(), "access_log": False}


def served(app: Any, access_log: bool) -> Any:
    """The ASGI app `newsletter serve` hands uvicorn: `app`, with the access log around it unless turned off."""
    from newsletter.web.logs import AccessLog

    return AccessLog(app) if access_log else app


def access_log_wanted(flag: bool | None) -> bool:
    """--access-log / --no-access-log, else NEWSLETTER_ACCESS_LOG (on unless 0, false, no or off)."""
    if flag is not None:
        return flag
    raw = os.environ.get("NEWSLETTER_ACCESS_LOG", "1").strip().lower()
    if raw in ("0", "false", "no", "off"):
        return False
    if raw in ("", "1", "true", "yes", "on"):
        return True
    fail(f"NEWSLETTER_ACCESS_LOG: {raw!r} is not 1 or 0")


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve_cmd(
        host: str = typer.Option(None, "--host", help="Address to listen on [env NEWSLETTER_HOST; 127.0.0.1]."),
        port: int = typer.Option(None, "--port", help="Port [env NEWSLETTER_PORT; 8000]."),
        access_log: bool | None = typer.Option(None, "--access-log/--no-access-log",
                                        help="A line per request on standard output, link tokens cut out "
                                             "[env NEWSLETTER_ACCESS_LOG; on]."),
    ) -> None:
        """Serve the editors' workspace, the public archive, the API and the subscription pages.

        Links in emails and the archive use NEWSLETTER_BASE_URL; put the app behind an https proxy there.
        Example: `NEWSLETTER_BASE_URL=https://news.example.com newsletter serve --port 8000`
        """
        import uvicorn

        from newsletter.web.app import create_app

        host = host or os.environ.get("NEWSLETTER_HOST") or "127.0.0.1"
        port = port or _env_port()
        log_requests = access_log_wanted(access_log)
        current = settings()
        if not os.environ.get("NEWSLETTER_BASE_URL"):  # no public address given: links point where we listen
            shown = "localhost" if host in ("127.0.0.1", "::1", "0.0.0.0", "::") else host
            current = dataclasses.replace(current, base_url=f"http://{shown}:{port}")
        web = create_app(current, engine=engine())
        console.print(f"Serving on http://{host}:{port} (public address {current.base_url}); "
                      f"editors sign in at {current.base_url}/signin", soft_wrap=True, highlight=False)
        proxies = trusted_proxies(os.environ.get("NEWSLETTER_TRUSTED_PROXIES"))
        if proxies:
            console.print(f"Trusting X-Forwarded-For from {', '.join(proxies)}")
        uvicorn.run(served(web, log_requests), **uvicorn_options(host, port, proxies))

    editors = typer.Typer(help="Editors: the accounts that sign in to the workspace and use the API.",
                          no_args_is_help=True)
    app.add_typer(editors, name="editors")

    @editors.command("add")
    def add_cmd(
        email: str = typer.Argument(..., help="The editor's email address (they sign in with it)."),
        password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from standard input."),
    ) -> None:
        """Add an editor, or set a new password for one (which signs them out everywhere).

        Example: `newsletter editors add ann@example.com` (asks for the password twice)
        """
        from newsletter.web.auth import create_editor

        address = _set_password(create_editor, email, password_stdin, "Password")
        if os.environ.get("NEWSLETTER_BASE_URL"):
            console.print(f"Editor {address} can sign in at {settings().base_url}/signin", soft_wrap=True)
        else:  # where `serve` will listen is not known here: say what the default is, not a guess
            console.print(f"Editor {address} can sign in at /signin of `newsletter serve` "
                          f"({settings().base_url}/signin with the default port; set NEWSLETTER_BASE_URL to "
                          "the public address)", soft_wrap=True, highlight=False)

    @editors.command("passwd")
    def passwd_cmd(
        email: str = typer.Argument(..., help="The editor's email address."),
        password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from standard input."),
    ) -> None:
        """Set a new password for an existing editor; every session signed in before ends at once.

        Example: `newsletter editors passwd ann@example.com` (asks for the new password twice)
        """
        from newsletter.web.auth import change_password

        address = _set_password(change_password, email, password_stdin, "New password")
        console.print(f"New password set for {address}; their earlier sessions are signed out")

    @editors.command("token")
    def token_cmd(email: str = typer.Argument(..., help="The editor's email address.")) -> None:
        """Create an API token for an editor and print it once (only its hash is kept; a new one replaces the
        old). Example: `newsletter editors token ann@example.com`
        """
        from newsletter.store.db import session_scope
        from newsletter.web.auth import AuthError, issue_api_token

        with session_scope(engine(existing=True)) as session:
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
        from newsletter.store.models import Editor

        with session_scope(engine(existing=True)) as session:
            rows = session.scalars(select(Editor).order_by(Editor.email)).all()
            for editor in rows:
                notes = []
                if editor.api_token_hash:
                    notes.append("has an API token")
                console.print(f"{editor.email}" + (f"  ({', '.join(notes)})" if notes else ""), highlight=False)
        console.print(f"{len(rows)} editor(s)")
