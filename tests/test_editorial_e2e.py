"""End to end: collect feeds, build with enrichment (articles fetched over loopback HTTP), send, read the email."""

from __future__ import annotations

import email
import json
from email import policy
from pathlib import Path

from tests.conftest import BOTH_DATABASES, rss, schedule_toml
from tests.feedserver import Route

FIXTURES = Path(__file__).parent / "fixtures" / "editorial"

BRIDGE_FULL = (
    "<p>The council of Saltby voted on Tuesday to rebuild the town's 140-year-old harbour bridge in timber rather "
    "than steel, ending a dispute that has divided residents for three years. Engineers had warned that the "
    "wooden crossing could fail within a decade, and the new bridge will be built by local carpenters.</p>"
)
TIMBER = (
    "<p>Engineers say timber bridges built from larch last more than a century when they are kept dry, and "
    "coastal towns across the county are choosing timber again over steel for their harbour crossings. Local "
    "carpenters and boatbuilders say the work keeps old skills alive.</p>"
)


@BOTH_DATABASES
def test_build_enriches_stories_and_the_email_shows_them(workdir, feed_server, cli) -> None:
    article = feed_server.url("/articles/harbour-bridge")
    feed_server.routes["/articles/harbour-bridge"] = Route(
        body=(FIXTURES / "harbour-bridge.html").read_bytes(), content_type="text/html; charset=utf-8"
    )
    # A link aggregator carries only the link; the paper's own feed carries the same story with a teaser.
    feed_server.routes["/links"] = Route(
        body=rss(
            "Links",
            [
                {
                    "guid": "l1",
                    "title": "Harbour bridge to be rebuilt in timber",
                    "link": article + "?utm_source=links",
                    "body": "<p>Comments</p>",
                    "hours_ago": 3,
                },
            ],
        )
    )
    feed_server.routes["/courier"] = Route(
        body=rss(
            "Coastline Courier",
            [
                {
                    "guid": "c1",
                    "title": "Town votes to rebuild the old harbour bridge in timber",
                    "link": article,
                    "body": BRIDGE_FULL,
                    "hours_ago": 2,
                },
                {
                    "guid": "c2",
                    "title": "Timber bridges make a comeback on the coast",
                    "link": "https://courier.example/t",
                    "body": TIMBER,
                    "hours_ago": 24 * 20,  # older than the window: in the archive, not in the issue
                },
            ],
        )
    )
    (workdir / "schedules" / "town.toml").write_text(
        schedule_toml(
            "town",
            [("Links", feed_server.url("/links")), ("Coastline Courier", feed_server.url("/courier"))],
            "[digest]\nfetch_articles_under_words = 150\n",
        )
    )
    assert "3 new items from 2 sources; 0 failed" in cli("collect").output
    out = cli("build", "town").output
    # The two copies of the bridge story are one; the timber story is older than the window.
    assert "Built issue #1" in out and "1 stories" in out

    data = json.loads(cli("issue", "show", "1", "--format", "json").output)
    bridge = next(i for i in data["items"] if "bridge" in i["title"].lower() and "comeback" not in i["title"])
    assert bridge["summary_method"] == "extractive"
    assert bridge["summary"].startswith("The council of Saltby voted on Tuesday")
    assert 1 <= len(bridge["quotes"]) <= 3
    speakers = {q["speaker"] for q in bridge["quotes"]}
    assert speakers & {"Council Leader Ingrid Holm", "Anna Sjöberg", "Mayor Peter Dahl"}
    assert [c["source"] for c in bridge["also_covered_by"]] == ["Links"]
    assert [r["title"] for r in bridge["related"]] == ["Timber bridges make a comeback on the coast"]
    assert bridge["related"][0]["blurb"].startswith("Engineers say timber bridges")
    assert feed_server.routes["/articles/harbour-bridge"].hits == 1  # fetched once for both copies

    assert "subscribed" in cli("subscribers", "add", "ann@example.com", "-n", "town").output
    cli("send", "town")
    [eml] = sorted((workdir / "outbox" / "town").rglob("*.eml"))
    msg = email.message_from_bytes(eml.read_bytes(), policy=policy.default)
    text, html = msg.get_payload()
    plain = " ".join(text.get_content().split())
    quote = bridge["quotes"][0]["text"]
    assert " ".join(quote.split()[:6]) in plain
    assert "Timber bridges make a comeback on the coast" in plain and "Also covered by" in plain
    assert "Timber bridges make a comeback on the coast" in html.get_content()
