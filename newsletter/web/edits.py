"""An editor's change to an issue, from the editor pages or the API: read, made, committed, and the issue rendered
again.

`EDITS` is the one table of the changes an editor can make: for each, what it changes (the issue or one of its
stories), how its value is read from the editor's form and from the API's JSON, and the compose.edit function
that makes it. The editor pages (web/editor.py) and the API (web/api.py) both answer from it, so a new kind of
edit is one row here, and the two never disagree about what a value may be. Rendering after every change means
the preview (and the kept render a send uses) always shows the new version.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from sqlalchemy import Engine
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from newsletter.compose import edit
from newsletter.config import Newsletter
from newsletter.render.cache import rendered_issue
from newsletter.store.db import session_scope
from newsletter.store.models import IssueRow
from newsletter.web.state import WebState

T = TypeVar("T")


def apply_edit(
    engine: Engine,
    nl: Newsletter,
    issue_id: int,
    change: Callable[[Session], T],
    *,
    base_url: str,
    templates_dir: Path | None = None,
) -> T:
    """Make a change (committed on its own) and render the issue again so the preview shows it."""
    with session_scope(engine) as session:
        result = change(session)
    rendered_issue(engine, issue_id, nl, base_url=base_url, templates_dir=templates_dir)
    return result


class NoSuchIssue(LookupError):
    """There is no issue with this id."""


class NoNewsletter(edit.EditError):
    """The issue's newsletter has no (valid) schedule file: the issue cannot be rendered after the change."""


def edit_issue(state: WebState, issue_id: int, change: Callable[[Session], T]) -> T:
    """Make a change to an issue and render it again with its newsletter's settings."""
    with session_scope(state.engine) as session:
        row = session.get(IssueRow, issue_id)
        if row is None:
            raise NoSuchIssue(f"no issue {issue_id}")
        slug = row.newsletter.slug
    nl = state.newsletter(slug)
    if nl is None:
        raise NoNewsletter(f"{state.settings.schedules_dir}/{slug}.toml is missing or broken")
    return apply_edit(state.engine, nl, issue_id, change, base_url=state.settings.base_url,
                      templates_dir=state.templates_dir)


# -- the table of edits -----------------------------------------------------------------------------------------

class BadValue(ValueError):
    """A value the edit cannot take; the message says what it expected."""


def json_of(kind: type | tuple[type, ...]) -> Callable[[Any], Any]:
    """A reader of a JSON value that must be of `kind` (a bool is not an int here)."""
    names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)

    def parse(value: Any) -> Any:
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise BadValue(f"expected {names}")
        return value

    return parse


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _json_quotes(value: Any) -> list[int]:
    if not isinstance(value, list):
        raise BadValue("expected list")
    if not all(_whole(k) for k in value):
        raise BadValue("expected a list of quote numbers (indexes into quote_candidates)")
    return value


def _form_offset(form: FormData) -> int:
    try:
        return int(str(form.get("offset", "0")))
    except ValueError:
        raise BadValue("offset must be a whole number") from None


def _form_quotes(form: FormData) -> list[int]:
    try:
        return [int(str(v)) for v in form.getlist("keep")]
    except ValueError:
        raise BadValue("quote numbers must be whole numbers") from None


@dataclass(frozen=True)
class StoryForm:
    """A story's form on the issue page: its summary and, when the page showed them, the quotes to keep."""

    summary: str
    keep: list[int] | None  # None: the form had no quotes to choose from, so they stay as they are


def _form_story(form: FormData) -> StoryForm:
    keep = _form_quotes(form) if form.get("quotes") == "1" else None
    return StoryForm(str(form.get("summary", "")), keep)


def _save_story(session: Session, issue_id: int, item_id: int, value: StoryForm) -> edit.Edit:
    """The summary and the quotes in one change: either button of the story's form saves both, or neither."""
    summary = edit.set_summary(session, issue_id, item_id, value.summary)
    if value.keep is None:
        return summary
    quotes = edit.keep_quotes(session, issue_id, item_id, value.keep)
    return edit.Edit(issue_id, summary.changed or quotes.changed, summary.reopened or quotes.reopened)


@dataclass(frozen=True)
class EditKind:
    """One kind of change. `make(session, issue_id, story_id, value)`; story_id is None for an issue's edit."""

    name: str  # the field in the API's JSON, and the edit's name on the editor pages
    on: Literal["issue", "story"]
    make: Callable[[Session, int, Any, Any], edit.Edit]
    from_form: Callable[[FormData], Any] | None  # None: not on the editor pages
    from_json: Callable[[Any], Any] | None  # None: not in the API


EDITS: dict[str, EditKind] = {e.name: e for e in (
    EditKind("intro", "issue", lambda s, issue, _story, intro: edit.set_intro(s, issue, intro),
         lambda form: str(form.get("intro", "")), json_of((str, type(None)))),
    EditKind("included", "story", edit.set_included, lambda form: form.get("included") == "1", json_of(bool)),
    EditKind("move", "story", edit.move, _form_offset, None),
    EditKind("summary", "story", edit.set_summary, lambda form: str(form.get("summary", "")), json_of(str)),
    EditKind("quotes", "story", edit.keep_quotes, _form_quotes, _json_quotes),
    EditKind("story", "story", _save_story, _form_story, None),  # the API's PATCH already takes both at once
)}


def json_fields(on: Literal["issue", "story"]) -> list[str]:
    """The fields of the API's JSON that can change an issue (on="issue") or a story, in the order they apply."""
    return [e.name for e in EDITS.values() if e.on == on and e.from_json is not None]


def change_of(name: str, issue_id: int, story_id: int | None, value: Any) -> Callable[[Session], edit.Edit]:
    """The change `name` with a value already read, ready for edit_issue."""
    make = EDITS[name].make
    return lambda session: make(session, issue_id, story_id, value)
