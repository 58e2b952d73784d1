"""A real sending process for the kill -9 tests.

    python -m tests.send_worker DB_URL SENDGRID_URL ISSUE_ID BATCH [HOLD_SECONDS]

Without HOLD_SECONDS it settles unknown outcomes through the Email Activity API (tests/test_deliver_kill.py); with
it, it holds and cancels (SENDGRID_SETTLE_BY=hold) on the test server's clock, read once at start, so that the
test can move that clock on between runs instead of waiting out the hold (tests/test_deliver_kill_hold.py).
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request

from newsletter.deliver.engine import SendOptions
from newsletter.deliver.sendgrid import SendGridMailer
from tests.conftest_sendgrid import SENDGRID_TEST_KEY
from tests.send_fixtures import World, make_world


def main() -> None:
    db_url, server_url, issue_id, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    world: World = make_world(db_url, 0)
    if len(sys.argv) > 5:
        with urllib.request.urlopen(f"{server_url}/_clock", timeout=10) as answer:
            offset = json.load(answer)["now"] - time.time()
        mailer = SendGridMailer(SENDGRID_TEST_KEY, server_url, activity_settle_seconds=0, settle_by="hold",
                                hold_seconds=float(sys.argv[5]), now=lambda: time.time() + offset)
    else:
        mailer = SendGridMailer(SENDGRID_TEST_KEY, server_url, activity_settle_seconds=0, settle_by="activity")
    # Two requests in flight, as `newsletter send` does with SendGrid: a kill can leave two batches unresolved.
    report = world.send(issue_id, mailer, batch, SendOptions(concurrency=2))
    print(report.status, report.sent_now, flush=True)


if __name__ == "__main__":
    main()
