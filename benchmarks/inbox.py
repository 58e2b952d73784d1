"""What getting into the inbox costs per message and per preflight, beside the baseline in the same run.

Per message (CPU time, `time.process_time`): building one recipient's RFC 5322 message alone (what an unsigned
SMTP or outbox send does), then building it and DKIM-signing it with dkimpy and verifying the signature as every
send does, RSA 2048 and Ed25519. Per preflight: the checks as they were (size, links, images, CSS, unsubscribe)
against the whole preflight with the accessibility and Outlook rules.

    python benchmarks/inbox.py [--runs N]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _cpu_ms(fn: Callable[[], object], runs: int) -> float:
    fn()
    start = time.process_time()
    for _ in range(runs):
        fn()
    return (time.process_time() - start) / runs * 1000


def main() -> list[dict[str, str]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args, _ = parser.parse_known_args()

    from newsletter.deliver.dkim import DkimSigner, domain_of, generate
    from newsletter.deliver.dnslookup import Lookup
    from newsletter.deliver.issue_mail import make_message
    from newsletter.deliver.mailer import Recipient
    from newsletter.deliver.message import build_email
    from newsletter.render import check
    from newsletter.render.engine import render_issue
    from tests.fixtures.issues import NOW, make_issue, make_newsletter

    nl = make_newsletter()
    rendered = render_issue(make_issue(12), nl, base_url="https://news.example.org", now=NOW)
    message = make_message(nl, rendered.subject, rendered.html, rendered.text, issue_number=1, issue_id=1)
    reader = Recipient("ann@example.org", "Ann", values={"unsubscribe_url": "https://news.example.org/u/abc"})
    size = len(build_email(message, reader).as_bytes())
    baseline = _cpu_ms(lambda: build_email(message, reader).as_bytes(), args.runs)
    rows = [{"benchmark": "message: build (baseline)", "per item": f"{baseline:.2f} ms CPU",
             "note": f"{size / 1024:.0f} KB message, 12 stories"}]
    for algorithm in ("rsa", "ed25519"):
        _, key = generate(algorithm)  # type: ignore[arg-type]
        signer = DkimSigner(key, "nl", None, Lookup())
        signer._records[domain_of(nl.from_address)] = key.record().encode()  # what ready() fetched from DNS
        cost = _cpu_ms(lambda s=signer: s.sign(build_email(message, reader).as_bytes(), nl.from_address), args.runs)
        rows.append({"benchmark": f"message: build + DKIM {algorithm} sign + verify", "per item": f"{cost:.2f} ms CPU",
                     "note": f"{cost / baseline:.1f}x the baseline"})

    def before() -> None:
        report, page = check.Report(), check.read_html(rendered.html)
        check.check_size(report, rendered.html)
        check.check_unsubscribe(report, rendered, page, None)
        check.check_links(report, page)
        check.check_images(report, page)
        check.check_css(report, page, rendered.compiler)

    old = _cpu_ms(before, args.runs)
    new = _cpu_ms(lambda: check.preflight(rendered), args.runs)
    rows.append({"benchmark": "preflight: message checks (baseline)", "per item": f"{old:.1f} ms CPU",
                 "note": f"{len(rendered.html) / 1024:.0f} KB HTML"})
    rows.append({"benchmark": "preflight: + accessibility and Outlook", "per item": f"{new:.1f} ms CPU",
                 "note": f"{new / old:.1f}x the baseline"})
    return rows


if __name__ == "__main__":
    from benchmarks.table import print_table

    print_table(main())
