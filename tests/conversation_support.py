"""Shared by the conversation tests: a served app with a test-only story route, and the reader's steps.

The HTTP tests look only at the conversation, so `/test-story/{id}` renders `conversation_block` inside a bare
page; the edition's real story page is what tests/test_web_conversation_browser.py (the whole flow, in Chromium)
and tests/test_web_feedback.py use.
"""

from __future__ import annotations

import email
import email.policy
import re
from email.message import EmailMessage

from sqlalchemy import select
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from newsletter.deliver.outbox import safe_name
from newsletter.store.db import session_scope
from newsletter.store.models import IssueItem
from tests.web_support import Site, csrf_of

LINK_RE = re.compile(r"/readers/signin/([A-Za-z0-9_.\-]+)")


def story_url(item_id: int) -> str:
    return f"/test-story/{item_id}"


def app_with_story_route(site: Site) -> Starlette:
    from newsletter.web.app import create_app
    from newsletter.web.conversation import conversation_block

    async def story(request: Request) -> HTMLResponse:
        item_id = int(request.path_params["item_id"])
        block = await run_in_threadpool(conversation_block, request, item_id, story_url(item_id))
        return HTMLResponse(f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Story</title>'
                            f'<link rel="stylesheet" href="/static/app.css"></head><body><main id="main">'
                            f"<h1>Story {item_id}</h1>{block}</main></body></html>")

    app = create_app(site.settings, engine=site.engine)
    app.router.routes.insert(0, Route("/test-story/{item_id:int}", story, methods=["GET"]))
    return app


def sent_items(site: Site) -> list[int]:
    with session_scope(site.engine) as session:
        return list(session.scalars(select(IssueItem.id).where(IssueItem.issue_id == site.sent_issue_id)
                                    .order_by(IssueItem.position)))


def sign_in_mail(site: Site, address: str) -> EmailMessage | None:
    path = site.settings.outbox_dir / "city" / "messages" / f"{safe_name(address)}.eml"
    if not path.exists():
        return None
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def link_path(site: Site, address: str) -> str:
    """The sign-in link's path, from the email in the outbox."""
    message = sign_in_mail(site, address)
    assert message is not None, f"no sign-in email to {address} in the outbox"
    text = message.get_body(preferencelist=("plain",))
    assert text is not None
    match = LINK_RE.search(text.get_content())
    assert match, "the email has no sign-in link"
    return match.group(0)


def ask_link(client, address: str, story: str):  # noqa: ANN001, ANN201 - an httpx client and its response
    form = client.get(f"/readers/signin?newsletter=city&next={story}")
    assert form.status_code == 200, form.text
    return client.post("/readers/signin", data={"csrf": csrf_of(form.text), "newsletter": "city", "next": story,
                                                "email": address})


def use_link(client, path: str):  # noqa: ANN001, ANN201
    button = client.get(path)
    if button.status_code != 200:
        return button
    return client.post(path, data={"csrf": csrf_of(button.text)})


def sign_in_reader(client, site: Site, address: str, story: str) -> None:  # noqa: ANN001
    asked = ask_link(client, address, story)
    assert asked.status_code == 200, asked.text
    used = use_link(client, link_path(site, address))
    assert used.status_code == 303, used.text


def post_comment(client, item_id: int, body: str, parent: int | None = None, website: str = ""):  # noqa: ANN001, ANN201
    page = client.get(story_url(item_id))
    data = {"csrf": csrf_of(page.text), "item": str(item_id), "next": story_url(item_id), "body": body,
            "website": website}
    if parent is not None:
        data["parent"] = str(parent)
    return client.post("/readers/comments", data=data)
