"""The API's OpenAPI 3.1 document (served at GET /api/openapi.json), built from the API's own table of operations.

web/api.py lists each operation once (`Operation`: method, path, handler, request and response models, the
error statuses it can answer); its routes and this document are both made from that list, so the document
cannot name a route the app lacks or miss one it has. Bodies are described by the pydantic models below, whose
JSON Schema (draft 2020-12, which OpenAPI 3.1 uses as is) goes into `components.schemas`. The request models
describe what the handlers accept (the handlers keep their own checks, which word the errors editors see;
tests/test_openapi.py holds the two together and runs schemathesis against a live server).
Response models leave extra fields allowed: the JSON issue format may gain fields, never lose them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from newsletter.web.limits import MAX_PATH_NUMBER

DateTime = Annotated[str, Field(json_schema_extra={"format": "date-time"})]


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


def optional(description: str) -> Any:
    """A body field that may be left out but, when given, must have its type (null is not "left out")."""
    return Field(default=None, description=description, json_schema_extra=_no_default)


# -- request bodies ------------------------------------------------------------------------------------------

class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class IssuePatch(_Body):
    """Change an issue: each field given is one edit; a request is applied whole or not at all."""

    intro: str | None = Field(default=None, description="The editor's note in Markdown; null or empty removes it",
                              json_schema_extra=_no_default)


class StoryPatch(_Body):
    """Change a story: each field given is one edit; a request is applied whole or not at all."""

    included: bool = optional("false drops the story from the issue, true puts it back")
    summary: str = optional("The summary readers see (the summary method becomes 'editor')")
    quotes: list[int] = optional("The quotes to keep, as indexes into the story's quote_candidates")


class Order(_Body):
    items: list[int] = Field(description="Every story id of the issue, once each, in the new order")


class NewSubscriber(_Body):
    email: str = Field(description="The address to subscribe", json_schema_extra={"format": "email"})
    name: str | None = Field(default=None, description="The reader's name", json_schema_extra=_no_default)
    double_opt_in: bool = optional("true: the subscription is pending and a confirmation email goes out")


class PreferencesPatch(_Body):
    """Change a reader's choices: each field given is changed, the others stay; applied whole or not at all."""

    sections_off: list[Annotated[str, Field(pattern=r"^[^\u0000]*$")]] = optional(
        "The sections the reader does not get (names from the schedule file)")
    frequency: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,30}$")] | None = Field(
        default=None, description="One of the newsletter's cadences; null: the default", json_schema_extra=_no_default)
    timezone: Annotated[str, Field(pattern=r"^[A-Za-z0-9_+/-]{1,64}$")] | None = Field(
        default=None, description="An IANA time zone; null: the newsletter's own", json_schema_extra=_no_default)
    format: Literal["html", "text"] = optional("html: an HTML and a text part; text: text/plain only")
    pause_weeks: Annotated[int, Field(ge=0, le=52)] = optional("Pause for this many weeks from now; 0 ends a "
                                                               "pause")


class ForgetReader(_Body):
    email: str = Field(description="The reader's address: the reader and every comment they wrote are removed")


# -- responses -----------------------------------------------------------------------------------------------

class Error(BaseModel):
    """Every error answer of the API."""

    error: str = Field(description="What is wrong, in words")


class NewsletterInfo(BaseModel):
    slug: str
    name: str
    description: str


class NewsletterList(BaseModel):
    newsletters: list[NewsletterInfo]


class IssueSummary(BaseModel):
    id: int
    newsletter: str = Field(description="The newsletter's slug")
    number: int
    subject: str
    status: str = Field(description="draft, approved, held, sending or sent")
    stories: int = Field(description="How many stories are included")
    created_at: DateTime
    sent_at: DateTime | None
    url: str = Field(description="This issue in the API")


class IssueList(BaseModel):
    issues: list[IssueSummary] = Field(description="Newest first")


class Quote(BaseModel):
    text: str
    speaker: str | None
    kind: Literal["speech", "passage"]
    start: int | None = Field(description="Offsets in the article text the quote was taken from")
    end: int | None


class Link(BaseModel):
    title: str
    url: str
    source: str | None
    blurb: str | None


class FollowUp(BaseModel):
    number: int = Field(description="The number of the sent issue this story continues")
    title: str
    url: str | None


class Story(BaseModel):
    id: int = Field(description="The story's id in this issue (ITEM in the paths)")
    position: int
    included: bool
    title: str
    url: str
    source: str
    author: str | None
    published: DateTime | None
    image_url: str | None
    summary: str
    summary_method: str
    quotes: list[Quote]
    related: list[Link]
    also_covered_by: list[Link]
    update_of: int | None = Field(description="The number of an earlier issue that sent this story before")
    via: str | None = Field(description="The aggregator the link came through, if any")
    follow_up: FollowUp | None
    domain: str


class StoryDetail(Story):
    quote_candidates: list[dict[str, Any]] = Field(
        description="Every quote found for the story, kept or not (StoryPatch.quotes indexes into this list)")


class Issue(BaseModel):
    """An issue in the stable JSON issue format (see the README), dropped stories included."""

    version: int
    id: int
    newsletter: str
    number: int
    subject: str
    preheader: str
    status: str
    period: str | None
    created_at: DateTime
    approved_at: DateTime | None
    sent_at: DateTime | None
    intro: str | None
    items: list[Story]
    approved_as_is: bool = Field(description="Approved, and unchanged since")


class Subscriber(BaseModel):
    email: str
    name: str | None
    status: str
    since: DateTime


class SubscriberList(BaseModel):
    subscribers: list[Subscriber]


class Added(BaseModel):
    email: str
    result: Literal["added", "exists", "reactivated", "suppressed", "confirmation-sent", "recently-sent",
                    "already-active"]
    status: str | None = Field(description="The subscription's status now")


class Preferences(BaseModel):
    email: str
    status: str
    sections_off: list[str]
    frequency: str | None
    timezone: str | None
    format: Literal["html", "text"]
    paused_until: DateTime | None
    changed_at: DateTime | None = Field(description="When the reader's choices last changed")


class Forgotten(BaseModel):
    email: str
    reader: bool = Field(description="false when no reader had the address")
    comments_removed: int


class CommentInfo(BaseModel):
    id: int
    status: Literal["visible", "pending", "hidden"]
    body: str = Field(description="As the reader typed it (plain text)")
    reader: str = Field(description="The reader's address")
    reader_blocked: bool
    issue_number: int
    story: str = Field(description="The story's headline")
    story_id: int
    reply: bool
    created_at: str = Field(description="UTC, ISO 8601")


class CommentList(BaseModel):
    comments: list[CommentInfo]


class FeedbackInfo(BaseModel):
    id: int
    status: Literal["open", "resolved", "dismissed"]
    kind: Literal["wrong", "misleading"] = Field(description="What the reader said of the summary")
    reason: str = Field(description="The reader's optional reason (plain text, may be empty)")
    from_: Literal["reader", "email", "unknown"] = Field(
        alias="from", description="reader: signed in on the story page; email: the signed link in their email")
    story_id: int
    story: str = Field(description="The story's headline")
    issue_number: int
    story_url: str = Field(description="The story's page on the web edition")
    summary: str = Field(description="The story's summary as the archive shows it now")
    corrected_at: str | None = Field(description="When an editor corrected the summary (UTC, ISO 8601), or null")
    created_at: str = Field(description="UTC, ISO 8601")


class FeedbackList(BaseModel):
    feedback: list[FeedbackInfo]


class Moderated(BaseModel):
    id: int
    status: str = Field(description="The comment's status now (visible, hidden, deleted)")


class StoryClicks(BaseModel):
    position: int = Field(description="The story's place in the issue, from 1")
    title: str
    clicks: int = Field(description="Reader clicks (machines apart)")
    unique_clicks: int = Field(description="Once per (reader, link, day)")


class DayCounts(BaseModel):
    day: int = Field(description="1 is the day of the send")
    date: str
    clicks: int
    opens: int


class IssueReport(BaseModel):
    """What happened after one issue's send (the README's "Tracking and reports" defines each figure)."""

    newsletter: str
    issue_id: int
    number: int
    subject: str
    sent_at: str | None
    mailer: str | None
    audience: int
    accepted: int
    delivered: int
    delivered_from: Literal["ledger", "sendgrid"]
    bounced: int
    dropped: int
    deferred: int
    complained: int
    unsubscribed: int
    clicks: int
    unique_clicks: int
    clickers: int
    machine_clicks: int
    opens: int
    openers: int
    machine_opens: int
    complaint_rate: float
    bounce_rate: float
    click_rate: float
    stories: list[StoryClicks]
    days: list[DayCounts]


class TrendIssue(BaseModel):
    issue_id: int
    number: int
    sent_at: str | None
    audience: int
    delivered: int
    clickers: int
    click_rate: float
    unsubscribed: int


class Trend(BaseModel):
    newsletter: str
    issues: list[TrendIssue]
    hold: str | None = Field(description="Why the guard holds the newsletter's scheduled sends, or null")


class Document(BaseModel):
    """This document (what OpenAPI 3.1 says of it is OpenAPI's business, not repeated here)."""

    model_config = ConfigDict(extra="allow")
    openapi: Literal["3.1.0"]
    info: dict[str, Any]
    paths: dict[str, Any]


# -- operations and the document -----------------------------------------------------------------------------

ERROR_TEXT = {
    400: "Bad input: the body is missing or not a JSON object, a field is unknown or of the wrong type, or text "
         "holds a NUL character or a lone surrogate",
    401: "No token, or not a valid one (Authorization: Bearer TOKEN)",
    404: "No such issue, story or newsletter",
    409: "The issue is sending or sent, or cannot be approved, held or reopened now",
    413: "The body is too large",
    422: "A value of the right type that cannot be taken: a change that cannot be made (a quote number beyond "
         "the candidates, an order that leaves out a story) or an address that cannot get mail",
    500: "The change was saved but the issue does not render (a template error)",
}


@dataclass(frozen=True)
class Query:
    name: str
    description: str


@dataclass(frozen=True)
class Operation:
    """One operation of the API. `errors`: the error statuses its handler can answer, beyond those every
    operation with a token (400, 401), a body (413) or a path number (404) has."""

    method: Literal["GET", "POST", "PUT", "PATCH"]
    path: str  # as Starlette routes it: /api/issues/{issue_id:int}
    handler: Callable[..., Any]
    summary: str
    response: type[BaseModel] | None  # None: an HTML page
    status: int = 200
    body: type[BaseModel] | None = None
    query: tuple[Query, ...] = ()
    errors: tuple[int, ...] = ()
    auth: bool = True


_PARAM = re.compile(r"\{(\w+)(?::(\w+))?\}")


def openapi_path(path: str) -> str:
    return _PARAM.sub(lambda m: "{" + m.group(1) + "}", path)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def document(operations: list[Operation], *, base_url: str, version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of these operations."""
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [(Error, "serialization")]
    for op in operations:
        if op.body is not None:
            models.append((op.body, "validation"))
        if op.response is not None:
            models.append((op.response, "serialization"))
    refs, defs = models_json_schema(list(dict.fromkeys(models)), ref_template="#/components/schemas/{model}")
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        params = [{"name": name, "in": "path", "required": True,
                   "schema": {"type": "integer", "minimum": 0, "maximum": MAX_PATH_NUMBER} if kind == "int"
                   else {"type": "string", "pattern": "^[^/]+$"}}
                  for name, kind in _PARAM.findall(op.path)]
        params += [{"name": q.name, "in": "query", "required": False, "description": q.description,
                    "schema": {"type": "string"}} for q in op.query]
        if op.response is None:
            ok = {"description": op.summary, "content": {"text/html": {"schema": {"type": "string"}}}}
        else:
            ok = _json(refs[(op.response, "serialization")], op.summary)
        errors = set(op.errors)
        if op.auth:  # a body is read (and may be refused) whenever one comes, and every query value is checked
            errors |= {400, 401}
        if op.body is not None:
            errors.add(413)
        if params and any(p["in"] == "path" for p in params):
            errors.add(404)
        responses: dict[str, Any] = {str(op.status): ok}
        responses |= {str(code): _json(_ref("Error"), ERROR_TEXT[code]) for code in sorted(errors)}
        spec: dict[str, Any] = {
            "operationId": op.handler.__name__,
            "summary": op.summary,
            "responses": responses,
        }
        if params:
            spec["parameters"] = params
        if op.body is not None:
            spec["requestBody"] = {"required": True,
                                   "content": {"application/json": {"schema": refs[(op.body, "validation")]}}}
        if not op.auth:
            spec["security"] = []
        paths.setdefault(openapi_path(op.path), {})[op.method.lower()] = spec
    return {
        "openapi": "3.1.0",
        "info": {"title": "newsletter API", "version": version,
                 "description": "Editors' API: issues, their stories, approval, subscribers. Errors are "
                                "{\"error\": \"...\"}. A token comes from `newsletter editors token EMAIL`."},
        "servers": [{"url": base_url}],
        "security": [{"bearerToken": []}],
        "paths": paths,
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {"bearerToken": {
                "type": "http", "scheme": "bearer",
                "description": "An editor's API token (`newsletter editors token EMAIL`); cookies are never "
                               "accepted here"}},
        },
    }
