"""Preflight an issue as it would go out: the rendered email plus the headers the mailer adds.

One function for every caller that must hold a bad send: `newsletter send`, `newsletter check`, the scheduler
and the editors' workspace.
"""

from __future__ import annotations

from sqlalchemy import Engine

from newsletter.config import Newsletter, Settings
from newsletter.deliver.issue_mail import make_message, templates_dir
from newsletter.deliver.mailer import Recipient
from newsletter.deliver.message import build_email
from newsletter.render.cache import rendered_issue
from newsletter.render.check import Report, preflight
from newsletter.render.engine import Rendered

SAMPLE_RECIPIENT = "preflight@example.org"


def sample_headers(nl: Newsletter, rendered: Rendered, issue_id: int, number: int, base_url: str) -> dict[str, str]:
    """The headers one real copy would carry (List-Unsubscribe and friends), built by the real builder."""
    message = make_message(nl, rendered.subject, rendered.html, rendered.text, issue_number=number,
                           issue_id=issue_id)
    sample = Recipient(SAMPLE_RECIPIENT, values={"unsubscribe_url": f"{base_url}/u/preflight",
                                                 "feedback_url": f"{base_url}/f/preflight",
                                                 "manage_url": f"{base_url}/m/preflight"})
    return dict(build_email(message, sample).items())


def preflight_issue(engine: Engine, nl: Newsletter, issue_id: int, number: int, settings: Settings
                    ) -> tuple[Rendered, Report]:
    rendered = rendered_issue(engine, issue_id, nl, base_url=settings.base_url,
                              templates_dir=templates_dir(settings))
    headers = sample_headers(nl, rendered, issue_id, number, settings.base_url)
    report = preflight(rendered, headers=headers)
    if settings.preflight_sender:  # NEWSLETTER_PREFLIGHT_SENDER=1: a send also waits for the DNS to be right
        from newsletter.deliver.sender import check_sender

        report.findings += check_sender(nl, settings).findings
    return rendered, report
