"""A database with a newsletter, an issue and N subscribers, for send tests (and the SIGKILL worker)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, insert, select

from newsletter.deliver.engine import SendOptions
from newsletter.deliver.ledger import start_send
from newsletter.deliver.mailer import Message
from newsletter.deliver.send import run_send
from newsletter.store.db import ensure_newsletter, get_engine, session_scope
from newsletter.store.models import IssueRow, Subscriber, Subscription
from newsletter.subscribers.tokens import Signer

SECRET = "test-secret-key"
BASE_URL = "https://news.example.com"
SLUG = "ai-weekly"

MESSAGE = Message(
    subject="AI Weekly #1",
    from_address="AI Weekly <news@example.com>",
    html='<p>Hi %%name%%</p><p><a href="%%unsubscribe_url%%">Unsubscribe</a></p>',
    text="Hi %%name%%\nUnsubscribe: %%unsubscribe_url%%",
    list_id="AI Weekly <ai-weekly.example.com>",
    categories=("ai-weekly",),
    custom_args={"newsletter": SLUG},
)


@dataclass
class World:
    engine: Engine
    newsletter_id: int

    def new_issue(self, number: int) -> int:
        with session_scope(self.engine) as s:
            row = IssueRow(newsletter_id=self.newsletter_id, number=number, subject=f"#{number}", status="approved")
            s.add(row)
            s.flush()
            return row.id

    def send(self, issue_id: int, mailer, batch_size: int, options: SendOptions | None = None):  # noqa: ANN001, ANN201
        send_id = start_send(self.engine, issue_id, self.newsletter_id, mailer.name, batch_size)
        return run_send(self.engine, send_id, self.newsletter_id, SLUG, MESSAGE, mailer, Signer(SECRET), BASE_URL,
                        options or SendOptions(sleep=lambda _s: None))


def make_world(url: str, subscribers: int) -> World:
    engine = get_engine(url)
    with session_scope(engine) as s:
        nl = ensure_newsletter(s, SLUG, "AI Weekly")
        newsletter_id = nl.id
        if subscribers:
            s.execute(insert(Subscriber), [{"email": f"user{i}@example.com", "name": f"User {i}", "fields": {}}
                                           for i in range(subscribers)])
            ids = s.scalars(select(Subscriber.id).order_by(Subscriber.id)).all()
            s.execute(insert(Subscription), [{"newsletter_id": newsletter_id, "subscriber_id": i, "status": "active"}
                                             for i in ids])
    return World(engine, newsletter_id)
