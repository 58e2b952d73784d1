"""What every request handler needs: settings, the database, the newsletters, the page templates, the mailer."""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

from sqlalchemy import Engine
from starlette.requests import Request
from starlette.templating import Jinja2Templates

from newsletter.config import Newsletter, Settings, load_all
from newsletter.deliver.mailer import Mailer
from newsletter.store.db import secret_key, session_scope
from newsletter.web.auth import AttemptLimiter, SignInThrottle

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"

V = TypeVar("V")


class KeptPages(Generic[V]):
    """Finished public pages kept in memory, each under the version of the rows it was made from.

    The caller looks the version up in the database (one small query) and gets the page only if it was made
    from that same version, so a page changed by another process (a send, a re-render) is never served stale.
    At most `limit` pages, least recently used out first; safe to share between the thread pool's threads.
    """

    def __init__(self, limit: int = 64) -> None:
        self.limit = limit
        self._pages: OrderedDict[Hashable, tuple[Hashable, V]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, version: Hashable) -> V | None:
        with self._lock:
            kept = self._pages.get(key)
            if kept is None or kept[0] != version:
                return None
            self._pages.move_to_end(key)
            return kept[1]

    def put(self, key: Hashable, version: Hashable, body: V) -> None:
        with self._lock:
            self._pages[key] = (version, body)
            self._pages.move_to_end(key)
            while len(self._pages) > self.limit:
                self._pages.popitem(last=False)


@dataclass
class WebState:
    settings: Settings
    engine: Engine
    templates: Jinja2Templates
    make_mailer: Callable[[], Mailer]
    limiter: AttemptLimiter = field(default_factory=AttemptLimiter)  # wrong sign-ins per client
    throttle: SignInThrottle = field(default_factory=SignInThrottle)  # wrong sign-ins per address + client
    # Subscriptions per client address (one address gets at most one confirmation email every ten minutes,
    # kept in the database by request_opt_in): a script cannot sign up thousands of strangers.
    subscribe_per_client: AttemptLimiter = field(default_factory=lambda: AttemptLimiter(limit=30, window=3600))
    archive_pages: KeptPages[bytes] = field(default_factory=KeptPages)  # web edition issue pages (edition.py)
    # Story pages of the web edition: (issue_item id, the canonical story key, the page), see edition.story_page.
    story_pages: KeptPages[tuple[int, str, bytes]] = field(default_factory=lambda: KeptPages(limit=512))
    _secret: str | None = None

    def newsletters(self) -> dict[str, Newsletter]:
        # Read on each call: editing a schedule file must not need a restart, and there are only a few.
        return load_all(self.settings.schedules_dir).newsletters

    def newsletter(self, slug: str) -> Newsletter | None:
        return self.newsletters().get(slug)

    @property
    def templates_dir(self) -> Path | None:
        folder = self.settings.templates_dir
        return folder if folder.is_dir() else None

    @property
    def secret(self) -> str:
        """The installation's signing key (NEWSLETTER_SECRET_KEY or the one kept in the database)."""
        if self._secret is None:
            with session_scope(self.engine) as session:
                self._secret = secret_key(session, self.settings.secret_key)
        return self._secret

    def derived_key(self, purpose: str) -> str:
        # One key per use, so a session cookie and an unsubscribe token never share a MAC key.
        return hmac.new(self.secret.encode(), purpose.encode(), hashlib.sha256).hexdigest()


def web_state(request: Request) -> WebState:
    return request.app.state.web
