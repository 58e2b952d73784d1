"""Related reading: other stories from the archive of collected items, ranked by BM25 over title and text.

BM25 comes from `rank-bm25` (small, pure Python over numpy) and orders the candidates; a TF-IDF cosine floor
decides which are related at all, since raw BM25 scores grow with the story's length and the archive's size.
The story itself, other copies of it (same page, same text, or close enough to be the same story) and
near-duplicates of an already listed item are left out: a reader should not be sent to what they just read.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

from rank_bm25 import BM25Okapi

from newsletter.editorial.cluster import LEAD_WORDS, STORY_THRESHOLD, TITLE_THRESHOLD, canonical_url, opening_key
from newsletter.text import clip_words, cosine, idf_table, split_sentences, tf_vector, tokens

INDEX_WORDS = 200  # title and opening words are what a story is about; the tail is noise and time
# TF-IDF cosine below which a BM25 hit shares only common words with the story. Set on the labelled pairs of
# benchmarks/fixtures/related_pairs.json: the related pairs there score 0.18-0.29, the off-topic matches seen
# in real issues ("Protein Misfolding" -> "Tern Speech Model") 0.13 and below. 0.1 let those through.
MIN_COSINE = 0.17
CANDIDATES = 50
QUERY_WORDS = 30
BLURB_CHARS = 140


@dataclass(frozen=True)
class Doc:
    id: int
    title: str
    url: str
    source: str
    text: str = ""
    content_hash: str = ""


def _terms(doc: Doc) -> list[str]:
    # The headline counts twice: it is the densest statement of what the story is about.
    return tokens(doc.title) * 2 + tokens(" ".join(doc.text.split()[:INDEX_WORDS]))


@lru_cache(maxsize=2048)  # one archive story is often related to several stories of an issue
def blurb(text: str, language: str | None = "en") -> str:
    """One line about a story: its first sentence, clipped at a word if long."""
    first = " ".join(text.split()[:80])
    sents = split_sentences(first, language) if first else []
    return clip_words(sents[0] if sents else first, BLURB_CHARS)


class RelatedIndex:
    """An index over archive documents, built once per issue and queried once per story."""

    def __init__(self, docs: list[Doc]):
        self.docs = docs
        self.terms = [_terms(d) for d in docs]
        self.by_id = {d.id: i for i, d in enumerate(docs)}
        self.bm25 = BM25Okapi(self.terms) if docs and any(self.terms) else None
        self._idf = idf_table(self.terms)
        self._urls = [canonical_url(d.url) for d in docs]
        self._openings = [opening_key(d.text) for d in docs]  # a reblog or syndicated copy opens word for word alike
        self._vectors: dict[int, dict[str, float]] = {}  # by position, made when first needed
        self._title_vectors: dict[int, dict[str, float]] = {}
        self._lead_vectors: dict[int, dict[str, float]] = {}

    def _doc_vec(self, i: int) -> dict[str, float]:
        if i not in self._vectors:
            self._vectors[i] = self._vec(self.terms[i])
        return self._vectors[i]

    def _title_vec(self, i: int) -> dict[str, float]:
        if i not in self._title_vectors:
            self._title_vectors[i] = self._vec(tokens(self.docs[i].title))
        return self._title_vectors[i]

    def _vec(self, terms: list[str]) -> dict[str, float]:
        return tf_vector(terms, self._idf)

    def _query_words(self, doc: Doc, terms: list[str]) -> list[str]:
        """The headline's words and the story's most distinctive ones: rank-bm25 walks the whole archive once
        per query word, and the rare words are what tells related stories apart anyway."""
        counts = Counter(terms)
        top = sorted(counts, key=lambda t: -counts[t] * self._idf.get(t, 1.0))[:QUERY_WORDS]
        return list(dict.fromkeys(tokens(doc.title) + top))

    def _lead_vec(self, doc: Doc) -> dict[str, float]:
        # The same measure as one-story-once clustering: headline twice and the opening words.
        return self._vec(tokens(doc.title) * 2 + tokens(" ".join(doc.text.split()[:LEAD_WORDS])))

    def _lead_vec_at(self, i: int) -> dict[str, float]:
        if i not in self._lead_vectors:
            self._lead_vectors[i] = self._lead_vec(self.docs[i])
        return self._lead_vectors[i]

    def _same_story(self, a: Doc, a_lead: dict[str, float], b_index: int) -> bool:
        b = self.docs[b_index]
        if a.id == b.id or (a.content_hash and a.content_hash == b.content_hash):
            return True
        url = canonical_url(a.url)
        if url and url == self._urls[b_index]:
            return True
        opening = opening_key(a.text)
        if opening and opening == self._openings[b_index]:
            return True
        if cosine(self._vec(tokens(a.title)), self._title_vec(b_index)) >= TITLE_THRESHOLD:
            return True
        return cosine(a_lead, self._lead_vec_at(b_index)) >= STORY_THRESHOLD

    def related(
        self,
        doc: Doc,
        limit: int = 5,
        *,
        exclude_ids: set[int] | None = None,
        exclude_urls: set[str] | None = None,
    ) -> tuple[list[Doc], list[Doc]]:
        """(related stories, other copies of this same story found on the way), best first."""
        scored, same = self.related_scored(doc, limit, exclude_ids=exclude_ids, exclude_urls=exclude_urls)
        return [d for d, _ in scored], same

    def related_scored(
        self,
        doc: Doc,
        limit: int = 5,
        *,
        exclude_ids: set[int] | None = None,
        exclude_urls: set[str] | None = None,
        min_cosine: float = MIN_COSINE,
    ) -> tuple[list[tuple[Doc, float]], list[Doc]]:
        """(related stories with their TF-IDF cosine, other copies of this same story found on the way), best
        first. Documents in `exclude_ids`/`exclude_urls` are never offered."""
        if self.bm25 is None or limit <= 0:
            return [], []
        query = _terms(doc)
        if not query:
            return [], []
        scores = self.bm25.get_scores(self._query_words(doc, query))
        exclude_ids = exclude_ids or set()
        skip_urls = {canonical_url(u) for u in (exclude_urls or set())}
        order = [i for i in sorted(range(len(self.docs)), key=lambda i: -scores[i])[:CANDIDATES] if scores[i] > 0]
        query_vec = self._vec(query)
        doc_lead = self._lead_vec(doc)
        picked: list[int] = []
        picked_scores: list[float] = []
        same: list[Doc] = []
        for i in order:
            if len(picked) >= limit:
                break
            cand = self.docs[i]
            if cand.id in exclude_ids or self._urls[i] in skip_urls or not cand.title.strip():
                continue
            if self._same_story(doc, doc_lead, i):
                if cand.id != doc.id:
                    same.append(cand)
                continue
            score = cosine(query_vec, self._doc_vec(i))
            if score < min_cosine:
                continue
            if any(self._same_story(cand, self._lead_vec_at(i), j) for j in picked):
                continue
            picked.append(i)
            picked_scores.append(score)
        # BM25 found the candidates; the cosine (the measure the floor is on) orders them, so the budget per
        # issue keeps the closest links.
        ranked = sorted(zip(picked, picked_scores, strict=True), key=lambda p: -p[1])
        return [(self.docs[i], s) for i, s in ranked], same


def related_entries(docs: list[Doc], language: str | None = "en") -> list[dict[str, str]]:
    return [{"title": d.title, "url": d.url, "source": d.source, "blurb": blurb(d.text, language)} for d in docs]
