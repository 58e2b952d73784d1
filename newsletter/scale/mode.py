"""Whether scale mode is on, and the PostgreSQL URL it needs: no procrastinate import, so the base install (no
`postgres` extra) can ask.
"""

from __future__ import annotations

import importlib.util
import os

from sqlalchemy.engine import make_url

from newsletter.config import ConfigError, Settings, redact_url

SCALE_ENV = "NEWSLETTER_SCALE"
EXTRA_HINT = "pip install 'newsletter[postgres]'"
# What the `postgres` extra brings (pyproject.toml): the driver, and the job queue of scale mode.
POSTGRES_MODULES = ("psycopg", "procrastinate")


def missing_postgres_extra() -> list[str]:
    """The modules of the `postgres` extra that are not installed (found without importing them)."""
    return [name for name in POSTGRES_MODULES if importlib.util.find_spec(name) is None]


def require_postgres_extra(what: str = "scale mode", modules: tuple[str, ...] = POSTGRES_MODULES) -> None:
    """Raise ConfigError, in one line, when the `postgres` extra (or the given part of it) is not installed."""
    missing = [name for name in missing_postgres_extra() if name in modules]
    if missing:
        raise ConfigError(f"{what} needs the postgres extra ({', '.join(missing)} not installed): "
                          f"install newsletter[postgres] ({EXTRA_HINT}, or pip install -e '.[postgres]' in a checkout)")


def is_postgres(url: str) -> bool:
    try:
        return make_url(url).get_backend_name() == "postgresql"
    except Exception:  # noqa: BLE001 - an unparsable URL is simply not PostgreSQL
        return False


def libpq_dsn(url: str) -> str:
    """A SQLAlchemy URL (`postgresql+psycopg://...`, `postgresql://...`) as the libpq URI psycopg opens.

    Query parameters (e.g. `options=-csearch_path=...`, `sslmode=require`) are kept: libpq understands them.
    """
    if not is_postgres(url):
        raise ConfigError(f"scale mode needs PostgreSQL: NEWSLETTER_DATABASE_URL is {redact_url(url)}")
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def scale_mode(settings: Settings, flag: bool = False) -> bool:
    """Scale mode: asked for (NEWSLETTER_SCALE=1 or --scale) on a PostgreSQL database.

    Asking for it on SQLite is an error rather than a silent fallback: workers on other machines could never
    see that database.
    """
    wanted = flag or os.environ.get(SCALE_ENV, "").strip().lower() in ("1", "true", "yes", "on")
    if not wanted:
        return False
    if not is_postgres(settings.database_url):
        raise ConfigError(f"scale mode ({SCALE_ENV}=1 or --scale) needs a PostgreSQL NEWSLETTER_DATABASE_URL, "
                          f"not {redact_url(settings.database_url)}")
    return True
