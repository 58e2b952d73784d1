"""A newsletter with tracking on, its issue #2 sent through the real SendGrid client to the local SendGrid server
(tests/sendgrid_server.py), served by `newsletter serve`'s app on loopback with that server's webhook key: what
the report tests and the report's browser test start from. Issue #1 went out before tracking was turned on."""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from newsletter.config import load_newsletter
from newsletter.store.db import ensure_newsletter, session_scope
from newsletter.store.models import IssueRow
from tests.sendgrid_server import SendGridServer
from tests.web_server import loopback_socket, serve_socket
from tests.web_support import SCHEDULE, Site, add_editor, make_site

READERS = ["ann@example.com", "bob@example.com", "cy@example.com"]
TRACKING = "\n[tracking]\nclicks = true\nopens = true\nmin_delivered = 1\n"
KEY = "SG.report-test"
RELATED = "https://elsewhere.example/bridges"


@dataclass
class World:
    site: Site
    server: SendGridServer
    url: str  # where the app listens (the emails' links name the site's base_url: the same)

    def parts(self, address: str) -> dict[str, str]:
        return self.server.message_for(address)

    def links(self, address: str) -> list[str]:
        """The /r/ links of the HTML part `address` received, in order."""
        return re.findall(r'href="([^"]*/r/[^"]*)"', self.parts(address)["text/html"])

    def story_links(self, address: str) -> dict[int, str]:
        """The first /r/ link of each story (by its position) in the copy `address` received."""
        out: dict[int, str] = {}
        for link in self.links(address):
            payload = link.rsplit("/", 2)[1].split(".")[0]
            story = int(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode().split(".")[1])
            out.setdefault(story, link)
        return out

    def path(self, url: str) -> str:
        return self.url + url.removeprefix(self.site.settings.base_url)


def send_tracked_issue(site: Site, server: SendGridServer) -> None:
    from newsletter.deliver.send import send_issue
    from newsletter.deliver.sendgrid import SendGridMailer
    from newsletter.subscribers.manage import add_subscriber

    (site.settings.schedules_dir / "city.toml").write_text(SCHEDULE + TRACKING)
    with session_scope(site.engine) as session:  # related reading: tracked like the stories
        issue = session.get_one(IssueRow, site.draft_issue_id)
        bridge = next(i for i in issue.items if i.title == "Bridge plan approved")
        bridge.related = [{"title": "Bridges of the world", "url": RELATED, "source": "Elsewhere"}]
    nl = load_newsletter(site.settings.schedules_dir / "city.toml")
    with session_scope(site.engine) as session:
        row = ensure_newsletter(session, nl.slug, nl.name)
        for address in READERS[1:]:
            add_subscriber(session, row, address, name=address.split("@")[0].title())
    mailer = SendGridMailer(KEY, host=server.url, settle_by="activity")
    try:
        report = send_issue(site.engine, nl, site.draft_issue_id, mailer, site.settings)
    finally:
        mailer.close()
    assert report.status == "done" and report.sent_now == 3, report


@contextmanager
def tracked_world(root: Path, database_url: str | None = None) -> Iterator[World]:
    from newsletter.web.app import create_app

    server = SendGridServer(KEY).start()
    sock, base = loopback_socket()
    saved = os.environ.get("SENDGRID_WEBHOOK_PUBLIC_KEY")
    os.environ["SENDGRID_WEBHOOK_PUBLIC_KEY"] = server.webhook_public_key
    try:
        site = make_site(root, base_url=base, database_url=database_url)
        add_editor(site.engine)
        send_tracked_issue(site, server)
        with serve_socket(create_app(site.settings, engine=site.engine), sock):
            yield World(site, server, base)
    finally:
        if saved is None:
            os.environ.pop("SENDGRID_WEBHOOK_PUBLIC_KEY", None)
        else:
            os.environ["SENDGRID_WEBHOOK_PUBLIC_KEY"] = saved
        server.stop()
