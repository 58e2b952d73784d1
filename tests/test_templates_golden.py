"""Golden files: the exact HTML and text of a small issue, so any change to the email is seen in review.

After an intended change, regenerate and read the diff:  NEWSLETTER_UPDATE_GOLDEN=1 python -m pytest
tests/test_templates_golden.py
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from newsletter.compose.issue import Issue
from newsletter.render.engine import render_issue
from tests.fixtures.issues import NOW, make_issue, make_newsletter

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("NEWSLETTER_UPDATE_GOLDEN") == "1"

def _pictured(issue: Issue) -> Issue:
    """The first story with a picture, the others without, the third continuing a story already sent: every
    kind of card is in the golden file."""
    issue.items[0].image_url = "https://example.org/img/story-1.jpg"
    issue.items[2].follow_up = {"number": 6, "title": "Researchers begin mapping Europe's urban heat",
                                "url": "https://news.example.org/2026/02/heat-map"}
    return issue


CASES = {
    "digest-ltr": (_pictured(make_issue(3)), make_newsletter()),
    "digest-rtl": (make_issue(1, intro=""), make_newsletter(language="he", direction="rtl")),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("part", ["html", "txt"])
def test_matches_golden_file(case: str, part: str) -> None:
    issue, nl = CASES[case]
    rendered = render_issue(issue, nl, base_url="https://news.example.org", now=NOW, compiler="mrml")
    output = rendered.html if part == "html" else rendered.text
    path = GOLDEN / f"{case}.{part}"
    if UPDATE or not path.exists():
        path.parent.mkdir(exist_ok=True)
        path.write_text(output, encoding="utf-8")
        if not UPDATE:
            pytest.fail(f"{path} did not exist and was written: check it in")
    assert output == path.read_text(encoding="utf-8"), (
        f"{path.name} changed; if intended, regenerate with NEWSLETTER_UPDATE_GOLDEN=1 and review the diff"
    )
