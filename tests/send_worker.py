"""A real sending process for the kill -9 test: python -m tests.send_worker DB_URL SENDGRID_URL ISSUE_ID BATCH."""

from __future__ import annotations

import sys

from newsletter.deliver.engine import SendOptions
from newsletter.deliver.sendgrid import SendGridMailer
from tests.conftest_sendgrid import SENDGRID_TEST_KEY
from tests.send_fixtures import World, make_world


def main() -> None:
    db_url, server_url, issue_id, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    world: World = make_world(db_url, 0)
    mailer = SendGridMailer(SENDGRID_TEST_KEY, server_url, activity_settle_seconds=0)
    # Two requests in flight, as `newsletter send` does with SendGrid: a kill can leave two batches unresolved.
    report = world.send(issue_id, mailer, batch, SendOptions(concurrency=2))
    print(report.status, report.sent_now, flush=True)


if __name__ == "__main__":
    main()
