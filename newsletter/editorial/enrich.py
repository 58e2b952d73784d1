"""Enrich an issue's stories: article text, summary, key quotes, related reading, other coverage.

Called by the build after it has chosen the stories (IssueItem rows). Every step is per story and
fault-isolated: a story whose page will not load, or whose text trips a bug, keeps what the feed gave it, says
why in `notes`, and the rest of the issue goes on.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import urlparse

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.collect.article import get_articles, run_sync
from newsletter.collect.fetch import FetchLimits
from newsletter.config import Newsletter
from newsletter.editorial import llm
from newsletter.editorial.cluster import canonical_url
from newsletter.editorial.headline import headline
from newsletter.editorial.quotes import SPEECH, extract_quotes
from newsletter.editorial.related import (
    Doc,
    Embedder,
    RelatedIndex,
    SemanticUnavailable,
    related_entries,
    related_index,
    semantic_embedder,
)
from newsletter.editorial.summarize import extractive_summary
from newsletter.store.models import Article, IssueItem, IssueRow, Item, Source, utcnow
from newsletter.text import remember_splits, sentence_splits, word_count
from newsletter.urls import web_url

log = logging.getLogger(__name__)

ARCHIVE_LIMIT = 5000  # most recent items searched for related reading
MIN_MODEL_WORDS = 40  # below this a model has nothing to summarize


@dataclass
class EnrichReport:
    items: int = 0
    articles_fetched: int = 0
    articles_cached: int = 0
    articles_failed: int = 0  # the fetch itself failed (timeout, HTTP error): not counted as fetched
    articles_unusable: int = 0  # fetched or cached, but no article in the page
    summaries: Counter[str] = field(default_factory=Counter)  # by summary_method
    quotes: int = 0
    direct_quotes: int = 0  # of kind speech; the rest are passages
    related: int = 0
    also_covered: int = 0
    merged: int = 0  # stories dropped as another source's copy of a story already in the issue
    problems: list[str] = field(default_factory=list)  # "#3 Title: what went wrong"
    fetch_seconds: float = 0.0  # waiting for article pages (network only)
    seconds: float = 0.0  # everything, fetch included
    stage_seconds: dict[str, float] = field(default_factory=dict)  # articles, summaries, quotes, related

    def summary_line(self) -> str:
        methods = ", ".join(f"{n} {m}" for m, n in sorted(self.summaries.items())) or "none"
        return (
            f"{self.items} stories: summaries {methods}; {self.quotes} quotes; {self.related} related links; "
            f"articles {self.articles_fetched} fetched, {self.articles_cached} cached, "
            f"{self.articles_failed} failed to fetch, {self.articles_unusable} unusable; "
            f"{len(self.problems)} problems"
        )


@dataclass
class _Story:
    row: IssueItem
    item: Item
    text: str
    language: str | None
    from_article: bool


def _label(row: IssueItem) -> str:
    return f"#{row.position} {row.title[:60]}"


def _source_label(name: str | None, title: str | None, link: str | None) -> str:
    """The source as a reader sees it: its name, else the feed's own title, else the site's host."""
    return name or title or urlparse(link or "").netloc


def _merge_duplicates(rows: list[IssueItem], report: EnrichReport) -> None:
    """Stories the selection left twice (same page, same text) become one, with 'also covered by'."""
    seen: dict[str, IssueItem] = {}
    for row in rows:
        if not row.included:
            continue
        keys = [k for k in (canonical_url(row.url), f"hash:{row.item.content_hash}" if row.item else "") if k]
        first = next((seen[k] for k in keys if k in seen), None)
        if first is None:
            for k in keys:
                seen[k] = row
            continue
        row.included = False
        row.notes = {**(row.notes or {}), "duplicate_of": first.position}
        covered = list(first.also_covered_by or [])
        if all(c.get("url") != row.url for c in covered):
            covered.append({"title": row.title, "url": row.url, "source": row.source_name})
        first.also_covered_by = covered
        report.merged += 1


def _load_articles(
    session: Session,
    rows: list[IssueItem],
    under_words: int,
    limits: FetchLimits | None,
    report: EnrichReport,
) -> dict[str, Article]:
    wanted = [
        r.url
        for r in rows
        if word_count(r.item.content_text if r.item else "") < under_words and web_url(r.url) is not None
    ]
    if not wanted:
        return {}
    started_at = utcnow()
    stats: dict[str, float] = {}
    try:
        # A savepoint: if storing fails (another build stored the same page a moment ago), only this part is
        # undone and the stories go on with their feed text.
        with session.begin_nested():
            articles = get_articles(session, wanted, limits, stats=stats)
    except Exception as exc:  # the issue still builds from feed text
        log.exception("article fetch failed")
        report.problems.append(f"articles: {type(exc).__name__}: {exc}")
        return {}
    report.fetch_seconds = stats.get("fetch_seconds", 0.0)
    for art in articles.values():
        if art.status == "failed":  # nothing came back: neither fetched nor cached
            report.articles_failed += 1
            continue
        if art.fetched_at >= started_at:
            report.articles_fetched += 1
        else:
            report.articles_cached += 1
        if art.status != "ok":
            report.articles_unusable += 1
    return articles


def _story(row: IssueItem, articles: dict[str, Article], default_language: str) -> _Story:
    item = row.item
    feed_text = item.content_text or ""
    art = articles.get(row.url)
    notes = dict(row.notes or {})
    if art is not None and art.status == "ok" and word_count(art.text) > word_count(feed_text):
        notes.pop("article", None)
        notes["text"] = f"article page, {word_count(art.text)} words"
        row.notes = notes
        if not row.image_url and web_url(art.image_url):  # rows stored before the check existed, too
            row.image_url = web_url(art.image_url)
        if not row.author and art.byline:
            row.author = art.byline[:500]
        if art.title:  # the page's own headline, when the feed's is a cut-off start of it
            row.title = headline(item.title, art.text, art.title)
        return _Story(row, item, art.text, art.language or item.language or default_language, True)
    if art is not None and art.status != "ok":
        notes["article"] = art.error or art.status
    notes["text"] = f"feed, {word_count(feed_text)} words"
    row.notes = notes
    return _Story(row, item, feed_text, item.language or default_language, False)


def _summaries(stories: list[_Story], nl: Newsletter, report: EnrichReport) -> None:
    d = nl.digest
    model_answers: dict[int, llm.Answer] = {}
    model = nl.summarizer.model if nl.summarizer is not None else ""  # only a summarizer gives answers
    if nl.summarizer is not None:
        asked = [s for s in stories if word_count(s.text) >= MIN_MODEL_WORDS]
        jobs = [llm.Job(s.row.title, s.text, d.summary_sentences, d.summary_words) for s in asked]
        try:
            answers = run_sync(llm.summarize_all(nl.summarizer, jobs, nl.language)) if jobs else []
        except Exception as exc:
            log.exception("model summaries failed")
            answers = [llm.Answer(None, f"{type(exc).__name__}: {exc}")] * len(jobs)
        model_answers = {id(s): a for s, a in zip(asked, answers, strict=True)}
    for story in stories:
        row = story.row
        notes = dict(row.notes or {})
        try:
            answer = model_answers.get(id(story))
            if answer is not None and answer.summary:
                row.summary, row.summary_method = answer.summary, f"model:{model}"
                notes.pop("summary", None)
            else:
                _extractive(story, nl, notes)
                if answer is not None:
                    notes["summary"] = (
                        f"model {model} gave no summary ({answer.error}); "
                        f"used {row.summary_method}"
                    )
        except Exception as exc:
            log.exception("summary failed for %s", row.url)
            notes["summary"] = f"failed: {type(exc).__name__}: {exc}"
            report.problems.append(f"{_label(row)}: summary: {type(exc).__name__}: {exc}")
        row.notes = notes
        report.summaries[row.summary_method] += 1


def _extractive(story: _Story, nl: Newsletter, notes: dict) -> None:
    d = nl.digest
    row = story.row
    if not story.from_article and word_count(story.text) <= d.summary_words and row.summary:
        row.summary_method = "feed"  # the feed's own text is already short: nothing better to make of it
        return
    summary = extractive_summary(
        story.text,
        title=row.title,
        max_sentences=d.summary_sentences,
        max_words=d.summary_words,
        language=story.language,
    )
    if summary:
        row.summary, row.summary_method = summary, "extractive"
    else:
        row.summary_method = "feed"
        notes.setdefault("summary", "no whole sentences to summarize; kept the feed's text")


@dataclass(frozen=True)
class _Archived:
    """What related reading needs of an archive item besides its `Doc`."""

    source_id: int | None
    published_at: datetime | None
    collected_at: datetime | None


def _archive(
    session: Session, stories: list[_Story], embed: Embedder | None = None
) -> tuple[RelatedIndex, dict[int, _Archived]]:
    """The index over the archive, and its items by id (held here: looking each copy up again cost a query
    apiece). Read as columns, not ORM objects: making a thousand of them per build cost more than ranking them,
    and the garbage collector's passes over them as much again."""
    rows = session.execute(
        select(Item.id, Item.title, Item.link, Item.content_text, Item.content_hash, Item.source_id,
               Item.published_at, Item.collected_at, Source.name, Source.title)
        .outerjoin(Source, Source.id == Item.source_id)
        .order_by(Item.id.desc())
        .limit(ARCHIVE_LIMIT)
    ).all()
    richer = {s.item.id: s.text for s in stories}
    docs = [
        Doc(id_, title or "", link or "", _source_label(source_name, source_title, link),
            richer.get(id_, text or ""), content_hash or "")
        for id_, title, link, text, content_hash, _, _, _, source_name, source_title in rows
    ]
    archived = {row[0]: _Archived(row[5], row[6], row[7]) for row in rows}
    return related_index(docs, embed), archived


def _in_window(item: Item | _Archived | None, issue: IssueRow) -> bool:
    if item is None:
        return False
    when = item.published_at or item.collected_at
    start = issue.window_start or (
        datetime.min if issue.window_end is None else issue.window_end - timedelta(31)
    )
    end = issue.window_end or datetime.max
    return when is None or start <= when <= end


def _related(
    session: Session, issue: IssueRow, stories: list[_Story], nl: Newsletter, report: EnrichReport
) -> None:
    """Related reading from the archive, never a story of this issue: not its own items, not the copies merged
    into them, not another copy found on the way. At most `related` links per story and `related_total` per
    issue, the closest ones kept."""
    per_story, budget = nl.digest.related, nl.digest.related_total
    embed: Embedder | None = None
    if nl.digest.related_method == "semantic":
        try:
            embed = semantic_embedder()
        except SemanticUnavailable as exc:  # the issue still gets related reading, the cheap kind, and says so
            report.problems.append(f"{nl.path or 'newsletter'}: digest.{exc}; used bm25 for this issue")
    index, archive_items = _archive(session, stories, embed)
    issue_ids = {r.item_id for r in issue.items if r.item_id is not None}
    issue_urls = {r.url for r in issue.items} | {
        c.get("url", "") for r in issue.items for c in (r.also_covered_by or [])
    }
    offers: dict[int, list[tuple[Doc, float]]] = {}
    copies: set[int] = set()  # other copies of any story of this issue
    for n, story in enumerate(stories):
        row = story.row
        try:
            covered = list(row.also_covered_by or [])
            doc = Doc(story.item.id, row.title, row.url, row.source_name, story.text, story.item.content_hash)
            # A few more than needed: some may turn out to be copies of another story of this issue.
            picked, same = index.related_scored(doc, per_story + 3, exclude_ids=issue_ids, exclude_urls=issue_urls)
            offers[n] = picked
            copies.update(d.id for d in same)
            # Another source's copy of this story, from the same period, is "also covered by".
            known = {canonical_url(u) for u in {row.url} | {c.get("url", "") for c in covered}}
            for other in same:
                other_item = archive_items.get(other.id) or session.get(Item, other.id)
                if (
                    other_item is None
                    or other_item.source_id == story.item.source_id
                    or canonical_url(other.url) in known
                    or not _in_window(other_item, issue)
                ):
                    continue
                covered.append({"title": other.title, "url": other.url, "source": other.source})
                known.add(canonical_url(other.url))
                report.also_covered += 1
            row.also_covered_by = covered
        except Exception as exc:
            log.exception("related reading failed for %s", row.url)
            report.problems.append(f"{_label(row)}: related: {type(exc).__name__}: {exc}")
            row.notes = {**(row.notes or {}), "related": f"failed: {type(exc).__name__}"}
    ranked = sorted(
        ((score, n, d) for n, picked in offers.items() for d, score in picked if d.id not in copies),
        key=lambda o: -o[0],
    )
    kept: dict[int, list[Doc]] = {n: [] for n in offers}
    shown: set[int] = set()  # one archive story is offered once per issue, under the story it is closest to
    total = 0
    for _score, n, d in ranked:
        if total >= budget:
            break
        if len(kept[n]) >= per_story or d.id in shown:
            continue
        kept[n].append(d)
        shown.add(d.id)
        total += 1
    for n, docs in kept.items():
        stories[n].row.related = related_entries(docs, stories[n].language)
        report.related += len(docs)


def _quotes(stories: list[_Story], nl: Newsletter, report: EnrichReport) -> None:
    for story in stories:
        row = story.row
        try:
            found = extract_quotes(
                story.text, limit=nl.digest.quotes, summary=row.summary, language=story.language
            )
            row.quotes = [q.as_dict() for q in found]
            report.quotes += len(found)
            report.direct_quotes += sum(q.kind == SPEECH for q in found)
        except Exception as exc:
            log.exception("quotes failed for %s", row.url)
            report.problems.append(f"{_label(row)}: quotes: {type(exc).__name__}: {exc}")
            row.notes = {**(row.notes or {}), "quotes": f"failed: {type(exc).__name__}"}


def _from_articles(stories: list[_Story], articles: dict[str, Article]) -> list[tuple[_Story, Article]]:
    """The stories told from their article page, each with its Article row."""
    return [(story, art) for story in stories
            if story.from_article and (art := articles.get(story.row.url)) is not None]


def _take_splits(stories: list[_Story], articles: dict[str, Article]) -> None:
    """Sentence splits an earlier build kept with the article: this process need not split the text again."""
    for story, art in _from_articles(stories, articles):
        if art.sentences is not None:
            remember_splits(story.text, story.language, art.sentences)


def _keep_splits(stories: list[_Story], articles: dict[str, Article]) -> None:
    """Keep each article's sentence splits with it (already made for its summary and quotes) for later builds."""
    for story, art in _from_articles(stories, articles):
        try:
            splits = sentence_splits(story.text, story.language)
        except Exception:  # a cache: never a reason for the build to fail
            log.exception("sentence splits not kept for %s", story.row.url)
            continue
        if art.sentences != splits:
            art.sentences = splits


def enrich_issue(
    session: Session, issue: IssueRow, newsletter: Newsletter, *, limits: FetchLimits | None = None
) -> EnrichReport:
    """Fill summary, quotes, related, also_covered_by and notes of each included story of `issue`."""
    t0 = time.monotonic()
    report = EnrichReport()
    rows = [r for r in issue.items if r.item is not None]
    _merge_duplicates(rows, report)
    rows = [r for r in rows if r.included]
    report.items = len(rows)
    lap = time.monotonic()

    def stage(name: str) -> None:
        nonlocal lap
        now = time.monotonic()
        report.stage_seconds[name] = now - lap
        lap = now

    articles = _load_articles(session, rows, newsletter.digest.fetch_articles_under_words, limits, report)
    stage("articles")
    stories: list[_Story] = []
    for row in rows:
        try:
            stories.append(_story(row, articles, newsletter.language))
        except Exception as exc:
            log.exception("story text failed for %s", row.url)
            report.problems.append(f"{_label(row)}: text: {type(exc).__name__}: {exc}")
    _take_splits(stories, articles)
    _summaries(stories, newsletter, report)
    stage("summaries")
    _quotes(stories, newsletter, report)
    stage("quotes")
    _keep_splits(stories, articles)
    if newsletter.digest.related > 0:
        _related(session, issue, stories, newsletter, report)
    stage("related")
    for story in stories:
        if story.row.notes and "article" in story.row.notes:
            report.problems.append(f"{_label(story.row)}: article: {story.row.notes['article']}")
    session.flush()
    report.seconds = time.monotonic() - t0
    return report
