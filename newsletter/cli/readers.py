"""`newsletter readers ...`: the readers who sign in to comment; `forget` is a reader's deletion request."""

from __future__ import annotations

import typer

from newsletter.cli.common import console, engine


def register(app: typer.Typer) -> None:
    readers_app = typer.Typer(help="Readers: the accounts that sign in by email link to comment on stories.",
                              no_args_is_help=True)
    app.add_typer(readers_app, name="readers")

    @readers_app.command("forget")
    def forget_cmd(email: str = typer.Argument(..., help="The reader's address.")) -> None:
        """Remove a reader and every comment they wrote (their deletion request). Replies others wrote to them
        stay. Their subscriptions are not touched: `newsletter subscribers unsubscribe` is separate.
        Example: `newsletter readers forget ann@example.com`"""
        from newsletter.store.db import session_scope
        from newsletter.web.conversation import forget_reader

        with session_scope(engine(existing=True)) as session:
            found, removed = forget_reader(session, email)
        if not found:
            console.print(f"{email}: no reader with this address (nothing to remove)")
            return
        console.print(f"{email}: reader removed, {removed} comment{'s' if removed != 1 else ''} deleted")
