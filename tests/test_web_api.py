"""The JSON API does what the editor pages do, for scripts: with a bearer token, never a cookie."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import select
from starlette.routing import Route

from newsletter.store.db import session_scope
from newsletter.store.models import Editor, IssueItem
from newsletter.web import api
from newsletter.web.auth import issue_api_token
from tests.web_support import EDITOR

pytest_plugins = ["tests.web_fixtures"]


@pytest.fixture
def token(site) -> str:  # noqa: ANN001
    with session_scope(site.engine) as session:
        return issue_api_token(session, EDITOR)


@pytest.fixture
def call(client, token):  # noqa: ANN001, ANN201
    def request(method: str, path: str, json=None, status: int = 200):  # noqa: ANN001, ANN202
        response = client.request(method, path, json=json, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == status, (method, path, response.status_code, response.text)
        return response.json()

    return request


def _items(site) -> dict[str, int]:  # noqa: ANN001
    with session_scope(site.engine) as session:
        return {i.title: i.id for i in session.scalars(
            select(IssueItem).where(IssueItem.issue_id == site.draft_issue_id))}


def test_a_token_is_needed_and_only_its_hash_is_kept(site, client, token) -> None:
    with session_scope(site.engine) as session:
        stored = session.scalar(select(Editor.api_token_hash).where(Editor.email == EDITOR))
    assert stored == hashlib.sha256(token.encode()).hexdigest() and token not in stored
    assert client.get("/api/issues").status_code == 401
    assert client.get("/api/issues").headers["www-authenticate"].startswith("Bearer")
    assert client.get("/api/issues", headers={"Authorization": f"Bearer {token}x"}).status_code == 401
    assert client.get("/api/issues", headers={"Authorization": f"Basic {token}"}).status_code == 401
    assert client.get("/api/issues", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    with session_scope(site.engine) as session:
        newer = issue_api_token(session, EDITOR)  # a new token replaces the old one
    assert client.get("/api/issues", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert client.get("/api/issues", headers={"Authorization": f"Bearer {newer}"}).status_code == 200


def test_a_signed_in_browser_cannot_use_the_api(site, editor_client) -> None:
    assert editor_client.get("/editor/").status_code == 200
    assert editor_client.get("/api/issues").status_code == 401
    assert editor_client.post(f"/api/issues/{site.draft_issue_id}/approve").status_code == 401


def test_list_and_get_issues(site, call) -> None:
    issues = call("GET", "/api/issues")["issues"]
    assert [(i["id"], i["status"], i["stories"]) for i in issues] == [(site.draft_issue_id, "draft", 3),
                                                                       (site.sent_issue_id, "sent", 2)]
    assert [i["id"] for i in call("GET", "/api/issues?status=sent")["issues"]] == [site.sent_issue_id]
    assert call("GET", "/api/issues?newsletter=other")["issues"] == []
    issue = call("GET", f"/api/issues/{site.draft_issue_id}")
    assert issue["version"] == 2 and issue["newsletter"] == "city" and issue["approved_as_is"] is False
    assert {i["title"] for i in issue["items"]} == set(_items(site))
    assert call("GET", "/api/issues/99", status=404)["error"] == "no issue 99"
    assert call("GET", "/api/newsletters")["newsletters"][0]["slug"] == "city"


def test_edit_items_reorder_and_intro(site, call) -> None:
    items = _items(site)
    path = f"/api/issues/{site.draft_issue_id}"
    issue = call("PATCH", f"{path}/items/{items['Ferry fares rise']}", {"included": False})
    ferry = next(i for i in issue["items"] if i["id"] == items["Ferry fares rise"])
    assert ferry["included"] is False
    story = call("GET", f"{path}/items/{items['Bridge plan approved']}")
    assert len(story["quote_candidates"]) == 3 and len(story["quotes"]) == 3
    issue = call("PATCH", f"{path}/items/{items['Bridge plan approved']}", {"summary": "New words.", "quotes": [2]})
    bridge = next(i for i in issue["items"] if i["id"] == items["Bridge plan approved"])
    assert bridge["summary"] == "New words." and bridge["summary_method"] == "editor"
    assert [q["text"] for q in bridge["quotes"]] == ["Nobody asked the people who live by the river."]
    order = [items["Library opens late"], items["Bridge plan approved"], items["Ferry fares rise"]]
    issue = call("PUT", f"{path}/order", {"items": order})
    assert [i["id"] for i in sorted(issue["items"], key=lambda i: i["position"])] == order
    assert call("PATCH", path, {"intro": "Hello **readers**"})["intro"] == "Hello **readers**"
    # The render follows: the stored HTML is the new version.
    from newsletter.store.models import IssueRow

    with session_scope(site.engine) as session:
        html = session.get(IssueRow, site.draft_issue_id).html
    assert "New words." in html and "Ferry fares rise" not in html and "<strong>readers</strong>" in html


def test_bad_requests_say_what_is_wrong(site, client, token, call) -> None:
    items = _items(site)
    path = f"/api/issues/{site.draft_issue_id}"
    item = f"{path}/items/{items['Ferry fares rise']}"
    assert "unknown field(s): title" in call("PATCH", item, {"title": "x"}, status=400)["error"]
    assert call("PATCH", item, {"included": "no"}, status=400)["error"] == "included: expected bool"
    assert "quote numbers" in call("PATCH", item, {"quotes": ["a"]}, status=400)["error"]
    assert "there is no quote" in call("PATCH", item, {"quotes": [5]}, status=422)["error"]
    assert "each story" in call("PUT", f"{path}/order", {"items": [items["Ferry fares rise"]]}, status=422)["error"]
    assert "has no story 9999" in call("PATCH", f"{path}/items/9999", {"included": False}, status=404)["error"]
    response = client.patch(item, content=b"{not json", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 400 and "not JSON" in response.json()["error"]
    # A request is applied whole or not at all: the bad quote number keeps the good summary out.
    call("PATCH", item, {"summary": "one", "quotes": [9]}, status=422)
    assert call("GET", item)["summary"] != "one"


def test_approve_hold_and_changes_after_approval(site, call) -> None:
    items = _items(site)
    path = f"/api/issues/{site.draft_issue_id}"
    issue = call("POST", f"{path}/approve")
    assert issue["status"] == "approved" and issue["approved_as_is"] is True and issue["approved_at"]
    issue = call("PATCH", f"{path}/items/{items['Library opens late']}", {"summary": "Later hours."})
    assert issue["status"] == "draft" and issue["approved_as_is"] is False
    assert call("POST", f"{path}/hold")["status"] == "held"
    assert call("POST", f"{path}/reopen")["status"] == "draft"
    sent = f"/api/issues/{site.sent_issue_id}"
    assert "can no longer be changed" in call("PATCH", sent, {"intro": "x"}, status=409)["error"]
    assert "nothing to approve" in call("POST", f"{sent}/approve", status=409)["error"]


def test_subscribers(site, call) -> None:
    people = call("GET", "/api/newsletters/city/subscribers")["subscribers"]
    assert [(p["email"], p["status"]) for p in people] == [("ann@example.com", "active")]
    added = call("POST", "/api/newsletters/city/subscribers", {"email": "bo@example.com", "name": "Bo"}, status=201)
    assert added == {"email": "bo@example.com", "result": "added", "status": "active"}
    again = call("POST", "/api/newsletters/city/subscribers", {"email": "bo@example.com"}, status=201)
    assert again["result"] == "exists"
    pending = call("POST", "/api/newsletters/city/subscribers", {"email": "cy@example.com", "double_opt_in": True},
                   status=201)
    assert pending["status"] == "pending"
    assert (site.root / "outbox" / "city" / "messages" / "cy@example.com.eml").exists()
    assert [p["email"] for p in call("GET", "/api/newsletters/city/subscribers?status=active")["subscribers"]] == [
        "ann@example.com", "bo@example.com"]
    assert "email" in call("POST", "/api/newsletters/city/subscribers", {"email": "x@@y"}, status=422)["error"]
    assert "reserved" in call("POST", "/api/newsletters/city/subscribers", {"email": "a@b.test"}, status=422)["error"]
    assert call("POST", "/api/newsletters/city/subscribers", {"email": 3}, status=400)["error"] == "email: expected str"
    assert call("POST", "/api/newsletters/city/subscribers", {}, status=400)["error"] == "email: required"
    assert call("GET", "/api/newsletters/nope/subscribers", status=404)["error"].startswith("no newsletter 'nope'")


def test_every_endpoint_is_documented(client) -> None:
    docs = client.get("/api/").text
    for route in api.routes():
        assert isinstance(route, Route)
        if route.path == "/api/":
            continue
        documented = route.path.replace("{issue_id:int}", "ID").replace("{item_id:int}", "ITEM").replace(
            "{slug}", "SLUG").replace("{comment_id:int}", "ID").replace("{action}", "ACTION").replace(
            "{email}", "EMAIL")
        for method in route.methods - {"HEAD"}:
            assert f"<td>{method}</td><td><code>{documented}" in docs, (method, documented)


@pytest.mark.postgres
def test_the_workspace_on_postgresql(tmp_path) -> None:
    """Scale mode: the same edits, approval and archive on PostgreSQL."""
    from starlette.testclient import TestClient

    from newsletter.web.app import create_app
    from tests.conftest import postgres_schema
    from tests.web_support import make_site

    with postgres_schema() as url:
        site = make_site(tmp_path, database_url=url)
        with session_scope(site.engine) as session:
            token = issue_api_token(session, _add_editor(session))
        items = _items(site)
        with TestClient(create_app(site.settings, engine=site.engine), base_url="https://testserver") as client:
            auth = {"Authorization": f"Bearer {token}"}
            path = f"/api/issues/{site.draft_issue_id}"
            issue = client.patch(f"{path}/items/{items['Bridge plan approved']}",
                                 json={"quotes": [1], "summary": "PG."}, headers=auth).json()
            bridge = next(i for i in issue["items"] if i["id"] == items["Bridge plan approved"])
            assert bridge["summary"] == "PG." and [q["speaker"] for q in bridge["quotes"]] == ["Tom Reyes"]
            assert client.post(f"{path}/approve", headers=auth).json()["approved_as_is"] is True
            assert client.get("/archive/city/1").status_code == 200
            assert client.get(f"/archive/city/{site.draft_issue_id}").status_code == 404
        site.engine.dispose()


def _add_editor(session) -> str:  # noqa: ANN001
    from newsletter.web.auth import create_editor

    return create_editor(session, EDITOR, "a long enough password").email


@pytest.mark.parametrize("body", ['{"summary": "a\\u0000b"}', '{"summary": "a\\ud800b"}', '{"\\ud800": 1}'])
def test_text_no_column_can_keep_is_refused_not_a_server_error(site, client, token, body) -> None:  # noqa: ANN001
    """A NUL (PostgreSQL refuses it) or a lone surrogate (UTF-8 cannot encode it) was a 500; now a 400 naming it."""
    item = f"/api/issues/{site.draft_issue_id}/items/{_items(site)['Ferry fares rise']}"
    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    response = client.patch(item, content=body.encode(), headers=auth)
    assert response.status_code == 400 and ("NUL" in response.json()["error"] or "surrogate" in response.json()[
        "error"]), response.text
    response = client.get("/api/issues?status=a%00b", headers=auth)
    assert response.status_code == 400 and response.json()["error"] == "status: contains a NUL character"
    assert client.get(item, headers=auth).json()["summary"] != "ab"


def test_a_patch_without_a_body_is_refused_and_a_wrong_method_names_the_right_ones(site, client, token) -> None:
    path = f"/api/issues/{site.draft_issue_id}"
    auth = {"Authorization": f"Bearer {token}"}
    response = client.patch(path, headers=auth)
    assert response.status_code == 400 and response.json()["error"] == "the body is missing: send a JSON object"
    response = client.delete(path, headers=auth)
    assert response.status_code == 405 and set(response.headers["allow"].split(", ")) == {"GET", "HEAD", "PATCH"}
