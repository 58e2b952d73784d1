"""An editor shapes the coming issue in the workspace: every change shows in the preview at once."""

from __future__ import annotations

import email
import re
from email import policy

from sqlalchemy import func, select

from newsletter.store.db import session_scope
from newsletter.store.models import IssueItem, IssueRow, Send
from tests.web_support import EDITOR, csrf_of

pytest_plugins = ["tests.web_fixtures"]


def _items(site) -> dict[str, int]:  # noqa: ANN001
    with session_scope(site.engine) as session:
        return {i.title: i.id for i in session.scalars(
            select(IssueItem).where(IssueItem.issue_id == site.draft_issue_id))}


def _preview(client, site, view: str = "email.html") -> str:  # noqa: ANN001
    response = client.get(f"/editor/issues/{site.draft_issue_id}/preview/{view}")
    assert response.status_code == 200
    return response.text


def _post(client, site, path: str, **data) -> str:  # noqa: ANN001, ANN003
    """Post a form from the issue page as the browser does, follow the redirect, return the page."""
    page = client.get(f"/editor/issues/{site.draft_issue_id}")
    response = client.post(f"/editor/issues/{site.draft_issue_id}/{path}", data={"csrf": csrf_of(page.text), **data},
                           follow_redirects=False)
    assert response.status_code == 303, response.text
    assert response.headers["location"].startswith(f"/editor/issues/{site.draft_issue_id}")
    return client.get(f"/editor/issues/{site.draft_issue_id}").text


def _status(site) -> str:  # noqa: ANN001
    with session_scope(site.engine) as session:
        return session.get(IssueRow, site.draft_issue_id).status


def test_home_lists_newsletters_and_issues_with_status(site, editor_client) -> None:
    page = editor_client.get("/editor/").text
    assert "City Weekly" in page
    rows = re.findall(r'<a href="/editor/issues/(\d+)">([^<]+)</a></td>\s*<td><span class="status (\w+)"', page)
    assert [(int(i), s) for i, _, s in rows] == [(site.draft_issue_id, "draft"), (site.sent_issue_id, "sent")]
    assert "City Weekly #2: Bridge plan approved" in rows[0][1]


def test_issue_page_shows_the_email_at_each_width_with_preflight(site, editor_client) -> None:
    page = editor_client.get(f"/editor/issues/{site.draft_issue_id}").text
    for frame, view, width in (("desktop", "email.html", "w600"), ("mobile", "email.html", "w375"),
                               ("dark", "dark.html", "w375"), ("text", "text.txt", "w600")):
        assert re.search(rf'id="preview-{frame}" class="{width}" src="/editor/issues/2/preview/{view}\?v=\w+"', page)
    assert "preflight passed" in page and "unsubscribe" in page
    html = _preview(editor_client, site)
    assert "Bridge plan approved" in html and "%%" not in html  # sample values fill the per-recipient places
    dark = _preview(editor_client, site, "dark.html")
    assert "prefers-color-scheme" in html and "prefers-color-scheme: dark" not in dark.replace(" ", "")
    text = _preview(editor_client, site, "text.txt")
    assert "Bridge plan approved" in text and "<" not in text.split("\n", 1)[0]
    assert editor_client.get("/editor/issues/2/preview/other.html").status_code == 404
    assert editor_client.get("/editor/issues/99").status_code == 404


def test_drop_and_include_a_story(site, editor_client) -> None:
    items = _items(site)
    version = re.search(r"preview/email.html\?v=(\w+)", editor_client.get("/editor/issues/2").text).group(1)
    page = _post(editor_client, site, f"items/{items['Ferry fares rise']}/include", included="0")
    assert "Saved." in page
    assert f'class="story dropped" id="story-{items["Ferry fares rise"]}"' in page
    assert re.search(r"preview/email.html\?v=(\w+)", page).group(1) != version  # the frames load the new render
    assert "Ferry fares rise" not in _preview(editor_client, site)
    assert "Ferry fares rise" not in _preview(editor_client, site, "text.txt")
    page = _post(editor_client, site, f"items/{items['Ferry fares rise']}/include", included="1")
    assert "Ferry fares rise" in _preview(editor_client, site)


def test_the_last_story_cannot_be_dropped(site, editor_client) -> None:
    items = _items(site)
    _post(editor_client, site, f"items/{items['Ferry fares rise']}/include", included="0")
    _post(editor_client, site, f"items/{items['Library opens late']}/include", included="0")
    page = _post(editor_client, site, f"items/{items['Bridge plan approved']}/include", included="0")
    assert "an issue needs at least one story or an intro note" in page
    assert "Bridge plan approved" in _preview(editor_client, site)
    # With an editor's note it may go out without stories (as a schedule's "nothing new" issue does).
    _post(editor_client, site, "intro", intro="A quiet week: nothing new to report.")
    _post(editor_client, site, f"items/{items['Bridge plan approved']}/include", included="0")
    html = _preview(editor_client, site)
    assert "A quiet week" in html and 'href="https://city.example/bridge"' not in html
    page = _post(editor_client, site, "intro", intro="")
    assert "include a story before removing the intro" in page and "A quiet week" in _preview(editor_client, site)
    _post(editor_client, site, "approve")
    assert _status(site) == "approved"


def test_edit_a_summary(site, editor_client) -> None:
    items = _items(site)
    page = _post(editor_client, site, f"items/{items['Bridge plan approved']}/summary",
                 summary="Councillors said yes to the new bridge.\r\nBuilders <start> soon.")
    assert "(editor)" in page
    html = _preview(editor_client, site)
    assert "Councillors said yes to the new bridge. Builders &lt;start&gt; soon." in html
    assert "The council approved the bridge plan" not in html
    assert "Councillors said yes to the new bridge. Builders <start> soon." in _preview(editor_client, site, "text.txt")


def test_pick_quotes_and_pick_a_dropped_one_again(site, editor_client) -> None:
    items = _items(site)
    bridge = items["Bridge plan approved"]
    html = _preview(editor_client, site)
    assert "We will finish the bridge by spring." in html and "best news for commuters" in html
    page = _post(editor_client, site, f"items/{bridge}/quotes", keep=["0", "2"])
    html = _preview(editor_client, site)
    assert "We will finish the bridge by spring." in html and "Nobody asked the people" in html
    assert "best news for commuters" not in html
    assert "best news for commuters" in page  # still offered, unticked
    _post(editor_client, site, f"items/{bridge}/quotes", keep=["1"])
    html = _preview(editor_client, site)
    assert "best news for commuters" in html and "We will finish the bridge" not in html
    page = _post(editor_client, site, f"items/{bridge}/quotes", keep=["7"])
    assert "there is no quote 8" in page


def test_a_storys_form_saves_its_summary_and_quotes_together_or_neither(site, editor_client) -> None:
    items = _items(site)
    bridge = items["Bridge plan approved"]
    page = _post(editor_client, site, f"items/{bridge}/story", summary="Both at once.", quotes="1", keep=["1"])
    assert f"items/{bridge}/story" in page and f"items/{bridge}/quotes" not in page  # one form for both
    with session_scope(site.engine) as session:
        row = session.get(IssueItem, bridge)
        assert row.summary == "Both at once." and len(row.quotes) == 1
        kept = row.quotes[0]["text"]
    assert "best news for commuters" in kept
    # A bad quote number refuses the whole save: the summary typed with it is not half-saved.
    page = _post(editor_client, site, f"items/{bridge}/story", summary="Never saved.", quotes="1", keep=["7"])
    assert "there is no quote 8" in page
    with session_scope(site.engine) as session:
        row = session.get(IssueItem, bridge)
        assert row.summary == "Both at once." and [q["text"] for q in row.quotes] == [kept]
    # A story shown without quotes to pick posts no "quotes": its quotes stay as they are.
    _post(editor_client, site, f"items/{bridge}/story", summary="Only the summary.")
    with session_scope(site.engine) as session:
        row = session.get(IssueItem, bridge)
        assert row.summary == "Only the summary." and [q["text"] for q in row.quotes] == [kept]


def test_reorder_stories(site, editor_client) -> None:
    items = _items(site)

    def order() -> list[str]:
        text = _preview(editor_client, site, "text.txt")
        return sorted(items, key=lambda title: text.index(title))

    first = order()
    _post(editor_client, site, f"items/{items[first[0]]}/move", offset="1")
    assert order() == [first[1], first[0], first[2]]
    _post(editor_client, site, f"items/{items[first[2]]}/move", offset="-1")
    assert order() == [first[1], first[2], first[0]]
    _post(editor_client, site, f"items/{items[first[1]]}/move", offset="-1")  # already first: stays
    assert order() == [first[1], first[2], first[0]]


def test_intro_note_is_markdown_without_html(site, editor_client) -> None:
    _post(editor_client, site, "intro", intro="A **big** week. <script>alert(1)</script>")
    html = _preview(editor_client, site)
    assert "<strong>big</strong>" in html and "<script>alert(1)</script>" not in html
    page = editor_client.get("/editor/issues/2").text
    assert "A **big** week. &lt;script&gt;" in page


def test_send_me_a_test_goes_to_the_editor_only(site, editor_client) -> None:
    page = _post(editor_client, site, "test")
    assert f"Test sent to {EDITOR}" in page
    files = list((site.root / "outbox" / "city" / "test").glob("*.eml"))
    assert [f.name for f in files] == [f"{EDITOR}.eml"]
    message = email.message_from_bytes(files[0].read_bytes(), policy=policy.default)
    assert message["Subject"] == "[TEST] City Weekly #2: Bridge plan approved" and message["To"] == EDITOR
    assert "Bridge plan approved" in message.get_body(("html",)).get_content()
    with session_scope(site.engine) as session:
        assert session.scalar(select(func.count(Send.id)).where(Send.issue_id == site.draft_issue_id)) == 0
        assert session.get(IssueRow, site.draft_issue_id).status == "draft"


def test_approve_then_an_edit_needs_approval_again(site, editor_client) -> None:
    items = _items(site)
    page = _post(editor_client, site, "approve")
    assert _status(site) == "approved" and f"approved as it is now by {EDITOR}" in page
    assert "preflight check fails" not in page
    with session_scope(site.engine) as session:
        row = session.get(IssueRow, site.draft_issue_id)
        assert row.approved_by == EDITOR and row.approved_hash
    page = _post(editor_client, site, f"items/{items['Library opens late']}/summary", summary="Open till ten.")
    assert "it needs approving again" in page and _status(site) == "draft"
    _post(editor_client, site, "approve")
    assert _status(site) == "approved"
    page = _post(editor_client, site, "hold")
    assert _status(site) == "held" and "Held" in page
    _post(editor_client, site, "reopen")
    assert _status(site) == "draft"


def test_a_sent_issue_cannot_be_changed(site, editor_client) -> None:
    page = editor_client.get(f"/editor/issues/{site.sent_issue_id}").text
    assert "it stays as it went out" in page and "Old market reopens" in page
    with session_scope(site.engine) as session:
        item = session.scalar(select(IssueItem.id).where(IssueItem.issue_id == site.sent_issue_id))
    response = editor_client.post(f"/editor/issues/{site.sent_issue_id}/items/{item}/summary",
                                  data={"csrf": csrf_of(page), "summary": "rewritten"}, follow_redirects=True)
    assert "it can no longer be changed" in response.text
    response = editor_client.post(f"/editor/issues/{site.sent_issue_id}/approve", data={"csrf": csrf_of(page)},
                                  follow_redirects=True)
    assert "there is nothing to approve" in response.text
    with session_scope(site.engine) as session:
        row = session.get(IssueRow, site.sent_issue_id)
        assert row.status == "sent" and all(i.summary != "rewritten" for i in row.items)


def test_saving_without_a_change_keeps_the_approval(site, editor_client) -> None:
    items = _items(site)
    page = editor_client.get("/editor/issues/2").text
    summary = re.search(rf'id="story-{items["Library opens late"]}".*?<textarea name="summary"[^>]*>([^<]*)</textarea>',
                        page, re.S).group(1)
    _post(editor_client, site, "approve")
    page = _post(editor_client, site, f"items/{items['Library opens late']}/summary", summary=summary)
    _post(editor_client, site, f"items/{items['Library opens late']}/include", included="1")
    _post(editor_client, site, f"items/{items['Bridge plan approved']}/quotes", keep=["0", "1", "2"])
    assert _status(site) == "approved" and "approving again" not in page


def test_a_broken_template_or_schedule_is_reported_on_the_page(site, editor_client) -> None:
    (site.root / "templates").mkdir()
    (site.root / "templates" / "digest.mjml.j2").write_text("<mjml><mj-body>\n{{ issue.nope( }}\n</mj-body></mjml>")
    page = editor_client.get("/editor/issues/2")
    assert page.status_code == 200
    assert re.search(r"The issue does not render: \S*templates/digest.mjml.j2:2: unexpected", page.text)
    assert "does not render" in editor_client.get("/editor/issues/2/preview/email.html").text
    items = _items(site)  # an edit is still saved, and says the render failed
    page = _post(editor_client, site, f"items/{items['Ferry fares rise']}/include", included="0")
    assert re.search(r"Saved, but the issue does not render: \S*digest.mjml.j2:2", page)
    (site.root / "templates" / "digest.mjml.j2").unlink()
    (site.root / "schedules" / "city.toml").unlink()
    page = editor_client.get("/editor/issues/2").text
    assert "city.toml is missing or broken" in page
    assert "No schedule file for city" in editor_client.get("/editor/").text
    assert editor_client.get("/archive/city/1").status_code == 200  # what went out is still public


def test_approving_an_issue_that_fails_preflight_warns(site, editor_client) -> None:
    # A template without an unsubscribe link fails the preflight, which holds a send.
    (site.root / "templates").mkdir()
    (site.root / "templates" / "digest.mjml.j2").write_text(
        "<mjml><mj-body><mj-section><mj-column><mj-text>{{ issue.subject }}</mj-text></mj-column></mj-section>"
        "</mj-body></mjml>")
    page = _post(editor_client, site, "approve")
    assert _status(site) == "approved" and "preflight FAILED" in page
    assert "The preflight check fails: a send holds this issue until it passes" in page
