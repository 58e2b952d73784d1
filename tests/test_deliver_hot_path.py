"""The send's fast paths give what the slow, general code gives: the address check, one-line names, the audience
page read from the cursor, the request body's JSON. Each compares the fast path with the code it stands in for."""

from __future__ import annotations

import json
import random
import string

import pytest
from sqlalchemy import insert, text

from newsletter.deliver.ledger import audience_page, audience_query
from newsletter.deliver.mailer import Recipient
from newsletter.deliver.message import MessageBuildError, recipient_address, recipient_display_name
from newsletter.deliver.sendgrid import SendGridMailer, _json_bytes
from newsletter.store.db import get_engine, session_scope
from newsletter.store.models import Subscriber, Subscription, Suppression
from newsletter.subscribers.tokens import UNSUBSCRIBE, InvalidToken, Signer
from newsletter.text import _CONTROLS, _LINE_BREAKS, single_line
from tests.conftest import BOTH_DATABASES
from tests.send_fixtures import MESSAGE, SLUG, make_world

ATEXT = string.ascii_letters + string.digits + "!#$%&'*+/=?^_`{|}~-"
TRICKY = [
    "a@b", "first.last@example.com", "o'brien@example.ie", "x+tag@sub.example.co.uk", "{weird}`|~@ex-ample.com",
    ".lead@example.com", "trail.@example.com", "two..dots@example.com", "@example.com", "user@", "user@@x.com",
    "quoted\"@example.com", "\"quoted local\"@example.com", "sp ace@example.com", "comma,@example.com",
    "user@[127.0.0.1]", "user@exa_mple.com", "user@.example.com", "user@example..com", "üser@example.com",
    "user@exämple.com", "new\nline@example.com", "cr\r@example.com", "tab\t@example.com", "semi;colon@example.com",
    "angle<@example.com", "user@example.com (comment)", "a(b)c@example.com", "user@example.com.", "",
    "user@[unclosed", "x@[1.2.3.4",  # the library's parser raised AttributeError on these (now refused alone)
]


def _slow(recipient: Recipient) -> str | type[MessageBuildError]:
    try:
        return recipient_address(recipient).display_name
    except MessageBuildError:
        return MessageBuildError


def _fast(recipient: Recipient) -> str | type[MessageBuildError]:
    try:
        return recipient_display_name(recipient)
    except MessageBuildError:
        return MessageBuildError


def test_the_plain_address_check_agrees_with_the_email_library() -> None:
    rng = random.Random(18)
    alphabet = ATEXT + ".@ \"(),:;<>[]\\\r\n\tüä"

    def atoms(chars: str) -> str:
        return ".".join("".join(rng.choice(chars) for _ in range(rng.randint(1, 6))) for _ in range(rng.randint(1, 3)))

    addresses = TRICKY + [atoms(ATEXT) + "@" + atoms(string.ascii_letters + string.digits + "-") for _ in range(3000)]
    addresses += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 14))) for _ in range(20000)]
    names = [None, "", "Ann", "Ann  Lee", " Ann ", "Ann\nBcc: x@evil.example", "Mal <other@evil.example>, M", "é" * 300]
    refused = 0
    for i, address in enumerate(addresses):
        recipient = Recipient(email=address, name=names[i % len(names)])
        assert _fast(recipient) == _slow(recipient), address
        refused += _slow(recipient) is MessageBuildError
    assert refused > 1000  # the generated addresses do include refused ones


def test_single_line_skips_only_text_the_full_cleaning_leaves_alone() -> None:
    # Every printable character but the space is one the cleaning keeps: the fast path's premise.
    assert not [c for c in map(chr, range(0x110000))
                if c.isprintable() and c != " " and (_LINE_BREAKS.match(c) or _CONTROLS.match(c))]
    rng = random.Random(7)
    pieces = ["a", "é", " ", "  ", "\n", "\t", "\x85", "\u2028", "\x00", "\x7f", "\u00a0", "Z", "\x1c"]
    for _ in range(20000):
        raw = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 8)))
        full = _LINE_BREAKS.sub(" ", _CONTROLS.sub("", raw)).strip()
        assert single_line(raw) == full, repr(raw)
        assert single_line(raw, 3) == full[:3].rstrip(), repr(raw)


@BOTH_DATABASES
def test_the_audience_page_is_the_audience_query(db_url: str) -> None:
    world = make_world(db_url, 0)
    engine = get_engine(db_url)
    with session_scope(engine) as s:
        s.execute(insert(Subscriber), [{"email": f"u{i}@example.com", "name": f"User {i}" if i % 7 else None,
                                        "fields": {}} for i in range(250)])
        ids = [r[0] for r in s.execute(text("SELECT id FROM subscriber ORDER BY id"))]
        s.execute(insert(Subscription), [{"newsletter_id": world.newsletter_id, "subscriber_id": sid,
                                          "status": "unsubscribed" if n % 11 == 0 else "active"}
                                         for n, sid in enumerate(ids)])
        s.add(Suppression(email="u5@example.com", newsletter_id=None, reason="bounced"))
        s.add(Suppression(email="u6@example.com", newsletter_id=world.newsletter_id, reason="complained"))
        # A name stored before names were kept on one line (written past the column type).
        s.execute(text("UPDATE subscriber SET name = :n WHERE email = 'u3@example.com'"),
                  {"n": "Ann\r\nBcc: evil@example.com"})
    with engine.connect() as conn:
        expected = [tuple(r) for r in conn.execute(audience_query(world.newsletter_id, 0, 10**9))]
        assert ("Ann Bcc: evil@example.com" in [r[3] for r in expected])
        for after, limit in ((0, 1000), (0, 40), (expected[30][0], 50), (expected[-1][0], 10)):
            page = audience_page(conn, world.newsletter_id, after, 10**9, limit)
            assert page == [r for r in expected if r[0] > after][:limit]
        assert audience_page(conn, world.newsletter_id, 0, expected[9][0], 1000) == expected[:10]
        assert audience_page(conn, world.newsletter_id + 1, 0, 10**9, 1000) == []


def test_the_request_body_is_the_same_json_whichever_encoder() -> None:
    mailer = SendGridMailer("SG.test", "http://127.0.0.1:9", activity_settle_seconds=0, settle_by="activity")
    recipients = [Recipient(email=f"r{i}@example.com", name=f"Zoë «{i}» <b>&", values={"unsubscribe_url": f"u/{i}"})
                  for i in range(50)]
    body = mailer.build_request(MESSAGE, recipients)
    assert json.loads(_json_bytes(body)) == json.loads(json.dumps(body)) == body
    assert body["personalizations"][1]["substitutions"]["%%name:html%%"] == "Zoë «1» &lt;b&gt;&amp;"
    assert body["custom_args"] == {"newsletter": SLUG}
    # A lone surrogate (orjson refuses it): the standard library's escape, never a lost request.
    odd = {"subject": "x\udc80"}
    assert json.loads(_json_bytes(odd)) == odd


@pytest.mark.parametrize("secret", ["s", "bench-secret", "k" * 64, "long-" * 40, "ключ"])
def test_batch_signing_gives_the_links_one_by_one_signing_gives(secret: str) -> None:
    signer = Signer(secret)
    ids = [1, 9, 10, 99, 12345, 10**12]
    links = signer.unsubscribe_urls("https://n.example/", ids, "ai-weekly")
    assert links == [signer.unsubscribe_url("https://n.example", i, "ai-weekly") for i in ids]
    assert [signer.read(link.rsplit("/", 1)[1], UNSUBSCRIBE).subscriber_id for link in links] == ids
    with pytest.raises(InvalidToken):
        Signer(secret + "x").read(links[0].rsplit("/", 1)[1], UNSUBSCRIBE)


def test_a_refused_address_is_left_out_alone() -> None:
    mailer = SendGridMailer("SG.test", "http://127.0.0.1:9", activity_settle_seconds=0, settle_by="activity")
    failed: dict[str, str] = {}
    body = mailer.build_request(MESSAGE, [Recipient(email="ok@example.com", name="Ok"),
                                          Recipient(email="not an address", name="Bad")], failed)
    assert [p["to"] for p in body["personalizations"]] == [[{"email": "ok@example.com", "name": "Ok"}]]
    assert list(failed) == ["not an address"]
    with pytest.raises(MessageBuildError):
        mailer.build_request(MESSAGE, [Recipient(email="not an address")])


def test_every_html_value_is_escaped_as_html_escape_does() -> None:
    import html

    mailer = SendGridMailer("SG.test", "http://127.0.0.1:9", activity_settle_seconds=0, settle_by="activity")
    names = ["Plain Name", "A & B", "<script>", "x > y", 'say "hi"', "O'Brien", "&amp;", "Zoë", "a\u2028b", ""]
    urls = ["https://n.example/u/abc", "https://n.example/u/a?x=1&y=<2>", "https://n.example/u/'\""]
    recipients = [Recipient(email=f"r{i}@example.com", name=name, values={"unsubscribe_url": url})
                  for i, (name, url) in enumerate((n, u) for n in names for u in urls)]
    body = mailer.build_request(MESSAGE, recipients)
    for r, p in zip(recipients, body["personalizations"], strict=True):
        subs = p["substitutions"]
        shown = recipient_display_name(r)
        assert subs["%%name%%"] == shown and subs["%%name:html%%"] == html.escape(shown, quote=True)
        url = r.values["unsubscribe_url"]
        assert subs["%%unsubscribe_url%%"] == url
        assert subs["%%unsubscribe_url:html%%"] == html.escape(url, quote=True)


def test_a_send_spares_the_collector_and_gives_its_settings_back() -> None:
    import gc

    from newsletter.deliver.engine import YOUNG_THRESHOLD, gc_spared

    before = gc.get_threshold()
    with gc_spared():
        assert gc.get_threshold()[0] >= YOUNG_THRESHOLD and gc.get_freeze_count() > 0
        with gc_spared():  # two sends in one process (scale-mode worker threads): the first one out restores
            pass
        assert gc.get_threshold()[0] >= YOUNG_THRESHOLD
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


def test_delivery_rows_are_written_whole_under_a_small_bound_values_limit(tmp_path) -> None:  # noqa: ANN001
    import sqlite3
    from datetime import datetime

    from sqlalchemy import event, select

    from newsletter.deliver.ledger import insert_deliveries, start_send
    from newsletter.store.models import Delivery, SendBatch

    world = make_world(f"sqlite:///{tmp_path / 'limit.db'}", 0)

    # An SQLite built with a limit of 40 bound values per statement: 6 rows of 6 columns per INSERT at most.
    @event.listens_for(world.engine, "connect")
    def small_limit(dbapi_connection, _record) -> None:  # noqa: ANN001
        dbapi_connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 40)

    world.engine.dispose()
    send_id = start_send(world.engine, world.new_issue(1), world.newsletter_id, "sendgrid", 100)
    rows = [(i, 1000 + i, f"p{i}@example.com", f"P {i}") for i in range(46)]  # audience rows
    ids = {f"p{i}@example.com": f"m{i}" for i in range(23, 46) if i % 3}  # the second batch's, for some
    with session_scope(world.engine) as s:
        for number, half in ((1, rows[:23]), (2, rows[23:])):
            batch = SendBatch(send_id=send_id, number=number, first_subscription_id=half[0][0],
                              last_subscription_id=half[-1][0], recipients=len(half), status="claimed")
            s.add(batch)
            s.flush()
            insert_deliveries(s, send_id, batch.id, half, "2026-12-02 10:00:00", ids if number == 2 else None)
    with session_scope(world.engine) as s:
        stored = s.execute(select(Delivery.subscriber_id, Delivery.email, Delivery.message_id, Delivery.sent_at)
                           .order_by(Delivery.subscriber_id)).all()
    assert [tuple(r[:3]) for r in stored] == [(r[1], r[2], ids.get(r[2])) for r in rows]
    assert {r[3] for r in stored} == {datetime(2026, 12, 2, 10, 0)}


def _as_sendgrid_fills(body: dict, index: int) -> dict[str, str]:
    """The parts one personalization's reader gets: each substitution key replaced literally, as SendGrid does."""
    subs = body["personalizations"][index].get("substitutions") or {}
    parts = {}
    for part in body["content"]:
        value = part["value"]
        for key, sub in subs.items():
            value = value.replace(key, sub)
        parts[part["type"]] = value
    return parts


@pytest.mark.parametrize("seed", range(12))
def test_each_reader_gets_their_values_escaped_in_html_and_as_they_are_in_text(seed: int) -> None:
    import html

    from newsletter.deliver.mailer import Message

    rnd = random.Random(seed)
    # Bodies with a key in both parts, one in the HTML only and one in the text only; values with and without
    # what HTML escaping changes, at random places in the batch (first, last, never).
    message = Message(subject="S", from_address="n@example.com", list_id="L <l.example.com>",
                      html='<p>%%name%% <a href="%%unsubscribe_url%%">x</a> %%manage_url%%</p>',
                      text="%%name%% %%unsubscribe_url%% %%feedback_url%%")
    specials = ["&", "<", ">", '"', "'"]

    def value(base: str) -> str:
        return base + (rnd.choice(specials) if rnd.random() < [0.0, 0.02, 0.5][seed % 3] else "")

    recipients = [Recipient(email=f"r{i}@example.com", name=value(f"Reader {i}"),
                            values={"unsubscribe_url": value(f"https://n.example/u/{i}"),
                                    "manage_url": value(f"https://n.example/m/{i}"),
                                    "feedback_url": value(f"https://n.example/f/{i}")})
                  for i in range(rnd.randint(1, 60))]
    mailer = SendGridMailer("SG.test", "http://127.0.0.1:9", activity_settle_seconds=0, settle_by="activity")
    body = mailer.build_request(message, recipients)
    for i, r in enumerate(recipients):
        v = {"name": r.name or "", **r.values}
        got = _as_sendgrid_fills(body, i)
        esc = {k: html.escape(x, quote=True) for k, x in v.items()}
        assert got["text/html"] == (f'<p>{esc["name"]} <a href="{esc["unsubscribe_url"]}">x</a> '
                                    f'{esc["manage_url"]}</p>')
        assert got["text/plain"] == f'{v["name"]} {v["unsubscribe_url"]} {v["feedback_url"]}'
        assert "%%" not in got["text/html"] + got["text/plain"]


def test_a_request_where_nothing_needs_escaping_sends_each_value_once() -> None:
    mailer = SendGridMailer("SG.test", "http://127.0.0.1:9", activity_settle_seconds=0, settle_by="activity")
    recipients = [Recipient(email=f"r{i}@example.com", name=f"Reader {i}", values={"unsubscribe_url": f"https://n.example/u/{i}"})
                  for i in range(5)]
    body = mailer.build_request(MESSAGE, recipients)
    assert [sorted(p["substitutions"]) for p in body["personalizations"]] == [
        ["%%name%%", "%%unsubscribe_url%%"]] * 5
    assert ":html%%" not in body["content"][1]["value"]
    # One name with an apostrophe: the name goes escaped for everyone of that request, the link still once.
    recipients[3] = Recipient(email="r3@example.com", name="O'Brien", values={"unsubscribe_url": "https://n.example/u/3"})
    body = mailer.build_request(MESSAGE, recipients)
    assert all(sorted(p["substitutions"]) == ["%%name%%", "%%name:html%%", "%%unsubscribe_url%%"]
               for p in body["personalizations"])
    assert body["personalizations"][3]["substitutions"]["%%name:html%%"] == "O&#x27;Brien"
