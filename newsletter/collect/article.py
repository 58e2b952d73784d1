"""Article pages: fetched once per URL with the feeds' limits; main text and metadata by trafilatura.

Results, good or bad, are kept in the `article` table: a page is not fetched again for every issue, and a
page that failed says why. Failures are retried after a day, in case the site was only down.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urljoin

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.collect.fetch import FetchLimits, FetchResult, fetch_all
from newsletter.collect.urls import web_url
from newsletter.store.models import Article, utcnow
from newsletter.text import is_boilerplate, normalize_ws, word_count

log = logging.getLogger(__name__)

MIN_ARTICLE_WORDS = 60  # less main text than this is a landing page, a paywall or a video, not an article
RETRY_FAILED_AFTER = timedelta(days=1)
_HTML_TYPES = ("text/html", "application/xhtml+xml", "text/plain", "")
_LANG_ATTR = re.compile(rb"<html[^>]*?\slang\s*=\s*[\"']?([A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})?)", re.I)
_META_LANG = re.compile(
    rb"<meta[^>]+(?:property=[\"']og:locale[\"']|http-equiv=[\"']content-language[\"'])[^>]*content=[\"']"
    rb"([A-Za-z]{2,3})",
    re.I,
)


@dataclass
class Extracted:
    status: str  # ok, not-article
    error: str | None = None
    title: str | None = None
    byline: str | None = None
    site_name: str | None = None
    published_at: datetime | None = None
    image_url: str | None = None
    language: str | None = None
    text: str = ""


def _language(html: bytes) -> str | None:
    head = html[:20000]
    m = _LANG_ATTR.search(head) or _META_LANG.search(head)
    return m.group(1).decode("ascii").replace("_", "-").lower() if m else None


def _byline(author: str | None) -> str | None:
    """trafilatura joins every author mark-up it sees; keep each name once ("Jane Doe; JANE DOE")."""
    if not author:
        return None
    seen: dict[str, str] = {}
    for part in re.split(r"\s*;\s*", author):
        part = normalize_ws(part)
        if part and part.lower() not in seen:
            seen[part.lower()] = part
    return "; ".join(seen.values())[:500] or None


def _clean_text(text: str, title: str | None) -> str:
    """Drop furniture that survives extraction ("Advertisement", "Share this") and a repeated headline."""
    lines = [normalize_ws(line) for line in text.splitlines()]
    lines = [line for line in lines if line and not is_boilerplate(line)]
    if lines and title and normalize_ws(title).lower() == lines[0].lower():
        lines = lines[1:]
    return "\n".join(lines)


def _date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(tz=None).replace(tzinfo=None)
    return parsed


def extract(html: bytes | str, url: str | None = None, content_type: str | None = None) -> Extracted:
    """Main text and metadata of one page. Never raises: an unusable page comes back as not-article."""
    import trafilatura

    kind = (content_type or "").split(";")[0].strip().lower()
    if kind not in _HTML_TYPES:
        return Extracted("not-article", f"not a web page ({kind})")
    raw = html.encode("utf-8") if isinstance(html, str) else html
    try:
        doc = trafilatura.bare_extraction(
            raw, url=url, with_metadata=True, include_comments=False, include_tables=False, deduplicate=True
        )
    except Exception as exc:  # trafilatura raises a variety of parser errors on broken markup
        return Extracted("not-article", f"extraction failed: {type(exc).__name__}: {exc}")
    if isinstance(doc, dict):  # only with as_dict=True, which is not asked for
        raise TypeError("trafilatura.bare_extraction returned a dict instead of a Document")
    text = _clean_text(doc.text or "", doc.title) if doc else ""
    if doc is None or word_count(text) < MIN_ARTICLE_WORDS:
        return Extracted(
            "not-article",
            f"no article text found ({word_count(text)} words)",
            title=(doc.title if doc else None),
            language=_language(raw),
        )
    return Extracted(
        "ok",
        title=doc.title,
        byline=_byline(doc.author),
        site_name=doc.sitename,
        published_at=_date(doc.date),
        # og:image is the page's to choose: relative to the page, then the same check as a feed's images.
        image_url=web_url(urljoin(url or "", doc.image)) if doc.image else None,
        language=doc.language or _language(raw),
        text=text,
    )


def _store(session: Session, row: Article | None, url: str, result: FetchResult) -> Article:
    if row is None:
        row = Article(url=url)
        session.add(row)
    row.fetched_at = utcnow()
    row.final_url = result.final_url
    if not result.ok:
        row.status, row.error, row.text = "failed", f"fetch failed: {result.error}", ""
        return row
    got = extract(result.body, result.final_url or url, result.content_type)
    row.status, row.error = got.status, got.error
    row.title, row.byline, row.site_name = got.title, got.byline, got.site_name
    row.published_at, row.image_url, row.language = got.published_at, got.image_url, got.language
    row.text = got.text
    return row


def run_sync(coro):  # noqa: ANN001, ANN202 - a coroutine in, its result out
    """asyncio.run, also from code that is itself inside an event loop (a web handler, a scheduler job)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def get_articles(
    session: Session,
    urls: Iterable[str],
    limits: FetchLimits | None = None,
    *,
    stats: dict[str, float] | None = None,
) -> dict[str, Article]:
    """The Article row for each URL: from the cache, or fetched now (concurrently) and stored.

    A fetch or extraction failure is a row with status 'failed' / 'not-article' and the reason in `error`.
    `stats`, when given, receives fetch_seconds (network) and extract_seconds (parsing), for benchmarks.
    """
    wanted = list(dict.fromkeys(u for u in urls if u))
    if not wanted:
        return {}
    rows = {a.url: a for a in session.scalars(select(Article).where(Article.url.in_(wanted)))}
    now = utcnow()
    stale = [
        u
        for u in wanted
        if u not in rows or (rows[u].status == "failed" and now - rows[u].fetched_at > RETRY_FAILED_AFTER)
    ]
    if stale:
        t0 = time.monotonic()
        results = run_sync(
            fetch_all(
                [(u, None, None) for u in stale],
                limits or FetchLimits(),
                accept="text/html,application/xhtml+xml;q=0.9,*/*;q=0.5",
            )
        )
        t1 = time.monotonic()
        for url, result in zip(stale, results, strict=True):
            rows[url] = _store(session, rows.get(url), url, result)
            if rows[url].status != "ok":
                log.info("article %s: %s", url, rows[url].error)
        session.flush()
        if stats is not None:
            stats["fetch_seconds"] = stats.get("fetch_seconds", 0.0) + (t1 - t0)
            stats["extract_seconds"] = stats.get("extract_seconds", 0.0) + (time.monotonic() - t1)
    return rows
