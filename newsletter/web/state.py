"""What every request handler needs: settings, the database, the newsletters, the page templates, the mailer."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine
from starlette.requests import Request
from starlette.templating import Jinja2Templates

from newsletter.config import Newsletter, Settings, load_all
from newsletter.deliver.mailer import Mailer
from newsletter.store.db import secret_key, session_scope
from newsletter.web.auth import AttemptLimiter, SignInThrottle

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"


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
