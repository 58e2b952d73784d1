"""One story once: the same story from several sources becomes one group, first-ranked item first.

Two items are the same story when they point at the same page (URLs compared without tracking parameters,
scheme, "www." or a trailing slash: the Hacker News link and the site's own feed), carry the same text, or
(from different sources, published within a few days of each other) their headlines and opening words are
close in TF-IDF cosine (two outlets on one announcement). Items from one source are not merged on wording
alone (a follow-up is a new story), except a reblog ("blogname: <the post>", opening with the post's words,
word for word); from different sources, the same opening words are a syndicated copy of one post.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from itertools import islice
from typing import Protocol, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit

from newsletter.text import cosine, idf_table, tf_vector, tokens

TITLE_THRESHOLD = 0.62  # headline vectors alone
STORY_THRESHOLD = 0.4  # headline + opening words
MAX_APART = timedelta(days=3)  # two outlets cover one story within days; weeks apart it is a new story
LEAD_WORDS = 80
KEY_WORDS = 150  # candidate pairs are proposed from a longer stretch than they are scored on
OPENING_WORDS = 30  # this many words in the same order are one post, not two that happen to agree
_WORD = re.compile(r"\w+")
_REBLOG_PREFIX = re.compile(r"^[a-z0-9][a-z0-9-]{1,49}\s*:\s*")  # Tumblr's "blogname : " before a reblogged post
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


def _lead(text: str, words: int = LEAD_WORDS) -> str:
    return " ".join((text or "").split()[:words])


def opening_key(text: str | None) -> str:
    """A fingerprint of the text's first words (case, punctuation and a reblog's "blogname:" aside), or "" when
    the text is too short for its opening to tell one post from another."""
    # Only the first words are read: scanning a whole article for them was most of related reading's time.
    start = _REBLOG_PREFIX.sub("", (text or "").lstrip(), count=1)
    words = [m.group().lower() for m in islice(_WORD.finditer(start), OPENING_WORDS)]
    if len(words) < OPENING_WORDS // 2:
        return ""
    return hashlib.sha1(" ".join(words[:OPENING_WORDS]).encode(), usedforsecurity=False).hexdigest()


def _apart(when_a: datetime | None, when_b: datetime | None) -> bool:
    return bool(when_a and when_b and abs(when_a - when_b) > MAX_APART)


class _Similarity:
    """Pairwise same-story scores, computed only for pairs that could match.

    A week of a busy newsletter holds thousands of items; comparing all pairs would be quadratic. Pairs are
    proposed by shared page, shared text, or a shared distinctive word (one of each item's most heavily
    weighted terms), which every real match has, and only those pairs are scored.
    """

    KEY_TERMS = 12

    def __init__(self, items: Sequence[StoryLike]):
        self.items = items
        title_terms = [tokens(it.title or "") for it in items]
        story_terms = [tokens(it.title or "") * 2 + tokens(_lead(it.content_text)) for it in items]
        idf = idf_table(title_terms + story_terms)
        self.title_vecs = [tf_vector(t, idf) for t in title_terms]
        self.story_vecs = [tf_vector(t, idf) for t in story_terms]
        self.urls = [canonical_url(it.link) for it in items]
        # Plain lists: ORM attribute access in the pair loop costs more than the cosine.
        self.hashes = [it.content_hash or "" for it in items]
        self.openings = [opening_key(it.content_text) for it in items]
        self.reblogs = [bool(_REBLOG_PREFIX.match((it.content_text or "").strip())) for it in items]
        self.sources = [it.source_id for it in items]
        self.dates = [getattr(it, "published_at", None) for it in items]
        self.by_key: dict[str, list[int]] = {}
        self.keys: list[list[str]] = []
        for i, it in enumerate(items):
            vec = tf_vector(tokens(it.title or "") * 2 + tokens(_lead(it.content_text, KEY_WORDS)), idf)
            keys = [f"t:{t}" for t in sorted(vec, key=lambda t: -vec[t])[: self.KEY_TERMS]]
            keys += [
                k for k in (f"u:{self.urls[i]}" if self.urls[i] else "", f"h:{it.content_hash or ''}",
                            f"o:{self.openings[i]}") if k not in ("h:", "o:")
            ]
            self.keys.append(keys)
            for key in keys:
                self.by_key.setdefault(key, []).append(i)

    def candidates(self, i: int) -> list[int]:
        """Items before `i` that share its page or text, or at least two of its key terms."""
        shared: Counter[int] = Counter()
        for key in self.keys[i]:
            weight = 1 if key.startswith("t:") else 2
            for j in self.by_key[key]:
                if j >= i:
                    break  # postings are in input order
                shared[j] += weight
        return sorted(j for j, n in shared.items() if n >= 2)

    def score(self, i: int, j: int) -> float:
        """1.0 for certain matches; 0.5 is on the threshold."""
        if (self.urls[i] and self.urls[i] == self.urls[j]) or (self.hashes[i] and self.hashes[i] == self.hashes[j]):
            return 1.0
        if self.openings[i] and self.openings[i] == self.openings[j] and (
            self.sources[i] != self.sources[j] or self.reblogs[i] or self.reblogs[j]
        ):
            return 1.0  # a syndicated copy, or a reblog in the same feed; one source's re-used text is not
        if self.sources[i] == self.sources[j] or _apart(self.dates[i], self.dates[j]):
            return 0.0
        t = cosine(self.title_vecs[i], self.title_vecs[j])
        st = cosine(self.story_vecs[i], self.story_vecs[j])
        return max(t / TITLE_THRESHOLD, st / STORY_THRESHOLD) * 0.5


def group_same_story(items: list[T]) -> list[list[T]]:
    """Groups of the same story; groups and their members keep the input (rank) order, so the first item
    of each group is its representative."""
    sim = _Similarity(items)
    group_of: dict[int, int] = {}
    groups: list[list[int]] = []
    for i in range(len(items)):
        # Compare with every earlier member of every group: a third outlet may be close to the second, not the first.
        best, best_score = None, 0.5
        for j in sim.candidates(i):
            score = sim.score(i, j)
            if score >= best_score and (best is None or score > best_score):
                best, best_score = group_of[j], score
        if best is None:
            group_of[i] = len(groups)
            groups.append([i])
        else:
            group_of[i] = best
            groups[best].append(i)
    return [[items[i] for i in group] for group in groups]
