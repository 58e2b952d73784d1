"""One story once: the same story from several sources becomes one group, first-ranked item first.

Two items are the same story when they point at the same page (URLs compared without tracking parameters,
scheme, "www." or a trailing slash: the Hacker News link and the site's own feed), carry the same text, or
(from different sources, published within a few days of each other) their headlines and opening words are
close in TF-IDF cosine (two outlets on one announcement). Items from one source are not merged on wording
alone: a follow-up is a new story.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Protocol, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit

from newsletter.build.text import cosine, idf_table, tf_vector, tokens

TITLE_THRESHOLD = 0.62  # headline vectors alone
STORY_THRESHOLD = 0.4  # headline + opening words
MAX_APART = timedelta(days=3)  # two outlets cover one story within days; weeks apart it is a new story
LEAD_WORDS = 80
_TRACKING = frozenset({"fbclid", "gclid", "mc_cid", "mc_eid", "ref", "ref_src", "cmpid", "ocid", "smid"})


class StoryLike(Protocol):
    link: str | None
    title: str
    content_text: str
    content_hash: str
    source_id: int
    published_at: datetime | None


T = TypeVar("T", bound=StoryLike)


def _is_tracking(key: str) -> bool:
    key = key.lower()
    return key.startswith("utm_") or key in _TRACKING


def canonical_url(url: str | None) -> str:
    if not url:
        return ""
    parts = urlsplit(url.strip())
    host = parts.netloc.lower()
    for prefix in ("www.", "m.", "amp."):
        if host.startswith(prefix):
            host = host[len(prefix) :]
    host = host.removesuffix(":80").removesuffix(":443")
    path = parts.path.rstrip("/")
    path = path.removesuffix("/amp")
    query = [(k, v) for k, v in parse_qsl(parts.query) if not _is_tracking(k)]
    return f"{host}{path}" + (f"?{urlencode(sorted(query))}" if query else "")


def _lead(text: str) -> str:
    return " ".join((text or "").split()[:LEAD_WORDS])


def _apart(a: StoryLike, b: StoryLike) -> bool:
    when_a, when_b = getattr(a, "published_at", None), getattr(b, "published_at", None)
    return bool(when_a and when_b and abs(when_a - when_b) > MAX_APART)


def same_story_pairs(items: Sequence[StoryLike]) -> list[list[float]]:
    """A symmetric matrix of similarity (1.0 for certain matches) between the items."""
    title_terms = [tokens(it.title or "") for it in items]
    story_terms = [tokens(it.title or "") * 2 + tokens(_lead(it.content_text)) for it in items]
    idf = idf_table(title_terms + story_terms)
    title_vecs = [tf_vector(t, idf) for t in title_terms]
    story_vecs = [tf_vector(t, idf) for t in story_terms]
    urls = [canonical_url(it.link) for it in items]
    n = len(items)
    sim = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            a, b = items[i], items[j]
            if (urls[i] and urls[i] == urls[j]) or (a.content_hash and a.content_hash == b.content_hash):
                s = 1.0
            elif a.source_id == b.source_id or _apart(a, b):
                s = 0.0
            else:
                t = cosine(title_vecs[i], title_vecs[j])
                st = cosine(story_vecs[i], story_vecs[j])
                s = max(t / TITLE_THRESHOLD, st / STORY_THRESHOLD) * 0.5  # 0.5 = on the threshold
            sim[i][j] = sim[j][i] = s
    return sim


def group_same_story(items: list[T]) -> list[list[T]]:
    """Groups of the same story; groups and their members keep the input (rank) order, so the first item
    of each group is its representative."""
    sim = same_story_pairs(items)
    groups: list[list[int]] = []
    for i in range(len(items)):
        best, best_score = None, 0.5
        for g_index, group in enumerate(groups):
            # Compare with every member: a third outlet may be close to the second but not the first.
            score = max(sim[i][j] for j in group)
            if score >= best_score and (best is None or score > best_score):
                best, best_score = g_index, score
        if best is None:
            groups.append([i])
        else:
            groups[best].append(i)
    return [[items[i] for i in group] for group in groups]
