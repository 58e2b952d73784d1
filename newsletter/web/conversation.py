"""The conversation under a story on the web edition: a placeholder until reader sign-in and comments land.

Owns two calls the edition pages make (keep their signatures): `conversation_block` renders the section shown
under the story card, per request (it will depend on who is signed in), and `comment_counts` says how many
comments each story of an issue has, for the issue page and the email's "Discuss" links.
"""

from __future__ import annotations

from sqlalchemy import Engine
from starlette.requests import Request


def conversation_block(request: Request, issue_item_id: int, story_url: str) -> str:
    """The HTML of the story's conversation section (no comments yet: nothing can be posted)."""
    del request, story_url  # used by the real section (the reader's session, the form's return address)
    heading = f"comments-{issue_item_id}"
    return (f'<section class="conversation" aria-labelledby="{heading}"><h2 id="{heading}">Comments</h2>'
            "<p>Sign in to join the conversation.</p><p>No comments yet. Be the first.</p></section>")


def comment_counts(engine: Engine, issue_id: int) -> dict[int, int]:
    """issue_item id -> number of visible comments; stories without comments are left out."""
    del engine, issue_id
    return {}
