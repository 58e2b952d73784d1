"""An editor's change to an issue, from the editor pages or the API: made, committed, and the issue rendered again.

Rendering after every change means the preview (and the kept render a send uses) always shows the new version.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from newsletter.config import Newsletter
from newsletter.render.cache import rendered_issue
from newsletter.store.db import session_scope

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
