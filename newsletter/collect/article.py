"""Article pages: fetched once per URL with the feeds' limits; main text and metadata by collect.extract.

Results, good or bad, are kept in the `article` table: a page is not fetched again for every issue, and a
page that failed says why. Failures are retried after a day, in case the site was only down.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.collect.extract import extract
from newsletter.collect.fetch import FetchLimits, FetchResult, fetch_all, run_fetches
from newsletter.store.models import Article, utcnow

log = logging.getLogger(__name__)

RETRY_FAILED_AFTER = timedelta(days=1)


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
    """run_fetches (asyncio.run, on uvloop where installed), also from code that is itself inside an event loop
    (a web handler, a scheduler job)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return run_fetches(coro)
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(run_fetches, coro).result()


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
