"""The editors' workspace is closed to anyone not signed in, forms need their CSRF token, drafts are never
public, and guessing passwords is stopped."""

from __future__ import annotations

import logging
import time

from sqlalchemy import select
from starlette.routing import Mount, Route

from newsletter.store.db import session_scope
from newsletter.store.models import Editor, IssueItem, IssueRow
from newsletter.web.signin import REFUSED
from tests.web_support import EDITOR, PASSWORD, csrf_of, sign_in

pytest_plugins = ["tests.web_fixtures"]


def _editor_routes(app) -> list[tuple[str, str]]:  # noqa: ANN001
    """(method, path) for every route under /editor/, with real ids filled in."""
    mount = next(r for r in app.routes if isinstance(r, Mount) and r.path == "/editor")
    out = []
    for route in mount.routes:
        assert isinstance(route, Route)
        for method in sorted(route.methods - {"HEAD"}):
            out.append((method, "/editor" + route.path))
    return out


def _fill(path: str, issue_id: int, item_id: int) -> str:
    return (path.replace("{issue_id:int}", str(issue_id)).replace("{item_id:int}", str(item_id))
            .replace("{view}", "email.html"))


def _included(site) -> list[bool]:  # noqa: ANN001
    with session_scope(site.engine) as session:
        return list(session.scalars(select(IssueItem.included).where(IssueItem.issue_id == site.draft_issue_id)
                                    .order_by(IssueItem.id)))


def _first_item(site) -> int:  # noqa: ANN001
    with session_scope(site.engine) as session:
        return session.scalar(select(IssueItem.id).where(IssueItem.issue_id == site.draft_issue_id)
                              .order_by(IssueItem.position))


def test_every_editor_route_redirects_to_sign_in_without_a_session(site, client) -> None:
    routes = _editor_routes(client.app)
    assert len(routes) >= 12  # the list is the app's own, so a route added later is checked too
    item = _first_item(site)
    before = _included(site)
    for method, path in routes + [("GET", "/editor/no-such-page"), ("POST", "/editor/no-such-page")]:
        url = _fill(path, site.draft_issue_id, item)
        response = client.request(method, url, data={"included": "0", "offset": "1", "summary": "x"},
                                  follow_redirects=False)
        assert response.status_code == 303, (method, url, response.status_code)
        assert response.headers["location"].startswith("/signin?next="), (method, url)
    assert client.get("/editor", follow_redirects=False).headers["location"].startswith("/editor/")
    assert _included(site) == before
    with session_scope(site.engine) as session:
        assert session.get(IssueRow, site.draft_issue_id).status == "draft"


def test_sign_in_then_sign_out(site, client) -> None:
    response = client.get("/editor/issues/2", follow_redirects=True)
    assert "Editors: sign in" in response.text and 'value="/editor/issues/2"' in response.text
    page = client.get("/signin?next=/editor/issues/2")
    response = client.post("/signin", data={"csrf": csrf_of(page.text), "email": EDITOR.upper(),
                                            "password": PASSWORD, "next": "/editor/issues/2"},
                           follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/editor/issues/2"
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "secure" in cookie
    assert client.get("/editor/").status_code == 200
    home = client.get("/editor/")
    response = client.post("/signout", data={"csrf": csrf_of(home.text)}, follow_redirects=False)
    assert response.status_code == 303
    assert client.get("/editor/", follow_redirects=False).status_code == 303


def test_sign_in_never_redirects_off_site(site, client) -> None:
    for target in ("https://evil.example/", "//evil.example/editor/", "/archive/city", "/editor/\\evil"):
        page = client.get("/signin")
        response = client.post("/signin", data={"csrf": csrf_of(page.text), "email": EDITOR, "password": PASSWORD,
                                                "next": target}, follow_redirects=False)
        assert response.headers["location"] == "/editor/", target
        client.cookies.clear()


def test_form_posts_without_the_csrf_token_are_refused(site, editor_client) -> None:
    item = _first_item(site)
    before = _included(site)
    posts = [p for m, p in _editor_routes(editor_client.app) if m == "POST"]
    assert len(posts) >= 9
    for path in posts:
        url = _fill(path, site.draft_issue_id, item)
        for data in ({"included": "0", "offset": "1", "summary": "hacked", "intro": "hacked"},
                     {"csrf": "forged-token", "included": "0", "summary": "hacked", "intro": "hacked"}):
            response = editor_client.post(url, data=data, follow_redirects=False)
            assert response.status_code == 403, (url, response.status_code)
    assert _included(site) == before
    with session_scope(site.engine) as session:
        row = session.get(IssueRow, site.draft_issue_id)
        assert row.status == "draft" and row.intro is None
        assert all(i.summary != "hacked" for i in row.items)
    # Signing out and the public subscribe form need it too.
    assert editor_client.post("/signout", data={}).status_code == 403
    assert editor_client.get("/editor/").status_code == 200  # still signed in
    assert editor_client.post("/archive/city/subscribe", data={"email": "x@example.com"}).status_code == 403
    # ... and the token of one session is no good in another.
    token = csrf_of(editor_client.get("/editor/").text)
    editor_client.cookies.clear()
    sign_in(editor_client)
    response = editor_client.post(f"/editor/issues/{site.draft_issue_id}/items/{item}/include",
                                  data={"csrf": token, "included": "0"}, follow_redirects=False)
    assert response.status_code == 403


def test_a_draft_is_never_public(site, client) -> None:
    assert client.get("/archive/city/1").status_code == 200  # sent
    missing = client.get("/archive/city/99")
    for status in ("draft", "held", "approved"):
        with session_scope(site.engine) as session:
            session.get(IssueRow, site.draft_issue_id).status = status
        response = client.get("/archive/city/2")
        assert response.status_code == 404, status
        assert response.text == missing.text  # not even whether it exists
        assert "Bridge plan approved" not in client.get("/archive/city").text
        assert "Bridge plan approved" not in client.get("/archive/city/feed.xml").text


def test_wrong_passwords_slow_down_the_next_try(site, client, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    throttle = client.app.state.web.throttle
    free = throttle.FREE_TRIES
    statuses = [sign_in(client, password=f"wrong password {n}").status_code for n in range(free)]
    assert statuses == [401] * free
    # Too soon after the last wrong one: even the right password waits, and the page says to wait.
    response = sign_in(client)
    assert response.status_code == 429 and REFUSED in response.text
    assert 0 < int(response.headers["Retry-After"]) <= 2
    assert client.get("/editor/", follow_redirects=False).status_code == 303
    assert "wrong password" not in caplog.text and PASSWORD not in caplog.text  # never log a password
    now = time.monotonic()
    throttle.clock = lambda: now + 3  # three seconds later
    assert sign_in(client).status_code == 303
    with session_scope(site.engine) as session:
        editor = session.scalar(select(Editor).where(Editor.email == EDITOR))
        assert editor.password_hash.startswith("$argon2id$") and PASSWORD not in editor.password_hash


def test_many_wrong_sign_ins_from_one_address_are_slowed_down(site, client) -> None:
    # Guessing across many addresses is limited per client address as well.
    limiter = client.app.state.web.limiter
    limiter.limit = 6  # 20 by default; the rule is the same
    codes = [sign_in(client, email=f"nobody{n}@example.com").status_code for n in range(limiter.limit)]
    assert set(codes) == {401}
    response = sign_in(client)  # the right password, but from an address that has guessed too often
    assert response.status_code == 429 and REFUSED in response.text


def test_unknown_and_wrong_accounts_get_the_same_answer(site, client) -> None:
    wrong = sign_in(client, password="not the password")
    unknown = sign_in(client, email="nobody@example.com")
    assert wrong.status_code == unknown.status_code == 401
    assert REFUSED in wrong.text and REFUSED in unknown.text


def test_previews_and_archive_pages_cannot_run_scripts(site, editor_client) -> None:
    preview = editor_client.get(f"/editor/issues/{site.draft_issue_id}/preview/email.html")
    assert preview.headers["content-security-policy"].startswith("sandbox")
    archived = editor_client.get("/archive/city/1")
    csp = archived.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp
    page = editor_client.get("/editor/")
    assert page.headers["x-frame-options"] == "SAMEORIGIN" and page.headers["cache-control"] == "no-store"
    assert "script-src" not in page.headers["content-security-policy"]  # default-src 'self': our own script only


def test_pages_without_a_form_set_no_cookie(site, client) -> None:
    for path in ("/archive/", "/archive/city/1", "/archive/city/feed.xml", "/archive/nope", "/api/"):
        assert "set-cookie" not in client.get(path).headers, path
    assert "set-cookie" in client.get("/archive/city").headers  # the subscribe form's CSRF token
