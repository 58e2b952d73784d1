"""Extractive summaries: the few sentences that best stand for the article, whole, in article order.

Each sentence is scored on where it sits (news puts the point first), how central it is to the article
(cosine with the article's term vector) and how much it shares with the headline; sentences that lean on
context ("But he ...", "This ...") and very short ones ("It failed.") are only taken right after the sentence they
follow, and a first-person sentence ("I spent a week…") never opens the summary of a news story (it may open
one of a review or a column, whose sentences are often in the first person). Picks are greedy under a
sentence count and a word budget, skipping near-repeats of what is already chosen. A sentence is never cut:
one that does not fit the budget is skipped.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from newsletter.text import (
    Sentence,
    cosine,
    idf_table,
    remember_joined,
    sentences,
    strip_dateline,
    tf_vector,
    tokens,
    word_count,
)

# Openers that point back to something the reader of a summary has not seen.
_DANGLING = re.compile(
    r"^(?:but|and|so|or|yet|also|still|however|meanwhile|instead|then|thus|this|that|these|those|it|its|he|she|"
    r"they|his|her|their|there|here|such|both|another|other|others|which|later|earlier|now|in\s+addition|"
    r"for\s+example|for\s+instance|as\s+a\s+result|in\s+fact|indeed|moreover|furthermore)\b",
    re.IGNORECASE,
)
# First-person narration and direct address make poor summary sentences for a third party.
_PERSONAL = re.compile(r"\b(?:I|I'm|I've|I'd|me|my|you|your)\b")
# A summary never opens with the writer speaking ("I spent a week with…"): it is about the story.
_FIRST_PERSON_OPENER = re.compile(r"^\W*(?:I|I['’]m|I['’]ve|I['’]d|I['’]ll|My|Me|We|We['’]re|We['’]ve|Our)\b")

MIN_WORDS = 2  # "It failed." can be the point; short sentences compete on the same scores
FIRST_PERSON_PIECE = 0.25  # this share of sentences in the first person makes a first-person piece
SHORT_WORDS = 6  # below this a sentence is only picked right after the one it completes
MAX_WORDS = 60


@dataclass(frozen=True)
class Weights:
    position: float = 1.0
    centrality: float = 1.2
    title: float = 0.8
    dangling: float = 0.35
    personal: float = 0.15
    redundancy: float = 0.5
    extra: float = 0.85  # a sentence past the second must score this share of the best one


DEFAULT_WEIGHTS = Weights()


def _position_score(index: int, total: int) -> float:
    # Steep at the top, flat afterwards: the lede matters, sentence 30 vs 40 does not.
    return 1.0 / math.sqrt(1.0 + index) if total else 0.0


def score_sentences(
    sents: list[Sentence], title: str = "", weights: Weights = DEFAULT_WEIGHTS
) -> list[tuple[float, Sentence, dict[str, float]]]:
    terms = [tokens(s.text) for s in sents]
    idf = idf_table(terms)
    vectors = [tf_vector(t, idf) for t in terms]
    centroid = tf_vector([t for ts in terms for t in ts], idf)
    title_vec = tf_vector(tokens(title), idf) if title else {}
    scored = []
    for sent, vec in zip(sents, vectors, strict=True):
        score = (
            weights.position * _position_score(sent.index, len(sents))
            + weights.centrality * cosine(vec, centroid)
            + weights.title * (cosine(vec, title_vec) if title_vec else 0.0)
        )
        if _DANGLING.match(sent.text.lstrip("\"“'‘ ")):
            score -= weights.dangling
        if _PERSONAL.search(sent.text):
            score -= weights.personal
        scored.append((score, sent, vec))
    return scored


def extractive_summary(
    text: str,
    *,
    title: str = "",
    max_sentences: int = 3,
    max_words: int = 80,
    language: str | None = "en",
    weights: Weights = DEFAULT_WEIGHTS,
) -> str:
    """Up to `max_sentences` whole sentences, at most `max_words` words, in article order ('' if none fit)."""
    picked = pick_sentences(
        text,
        title=title,
        max_sentences=max_sentences,
        max_words=max_words,
        language=language,
        weights=weights,
    )
    out = ""
    parts = []
    for s in picked:
        sent = strip_dateline(s.text) if s.index == 0 else s.text
        # CJK text has no space between sentences.
        out += ("" if not out or out.endswith(("。", "！", "？", "」", "』")) else " ") + sent
        parts.append(sent)
    remember_joined(out, language, parts)  # the quotes split the summary again: these are its sentences
    return out


def pick_sentences(
    text: str,
    *,
    title: str = "",
    max_sentences: int = 3,
    max_words: int = 80,
    language: str | None = "en",
    weights: Weights = DEFAULT_WEIGHTS,
) -> list[Sentence]:
    every = sentences(text, language)
    sents = [s for s in every if MIN_WORDS <= word_count(s.text) <= MAX_WORDS]
    sents = [s for s in sents if not _same_as_title(s.text, title)]
    if not sents:
        return []
    scored = sorted(score_sentences(sents, title, weights), key=lambda x: -x[0])
    chosen: list[tuple[Sentence, dict[str, float]]] = []
    used = 0
    # Sentences that lean on the one before ("But it failed.", "He said…") or are very short only come in
    # right after that sentence; a first-person sentence never opens the summary.
    leaning = {s.index for s in sents if _DANGLING.match(s.text.lstrip("\"“'‘ ")) or word_count(s.text) < SHORT_WORDS}
    # In a piece written in the first person (a review, an essay, a column) "I" is the story; in news it is not.
    first_person_piece = sum(bool(_PERSONAL.search(s.text)) for s in every) >= FIRST_PERSON_PIECE * len(every)
    for score, sent, vec in scored:
        if len(chosen) >= max_sentences:
            break
        if len(chosen) >= 2 and score < weights.extra * scored[0][0]:
            break
        n = word_count(sent.text)
        if used + n > max_words:
            continue
        picked = {s.index for s, _ in chosen}
        if sent.index in leaning and sent.index - 1 not in picked:
            continue
        if (
            not first_person_piece
            and _FIRST_PERSON_OPENER.match(sent.text)
            and (not picked or sent.index < min(picked))
        ):
            continue
        penalty = max((cosine(vec, v) for _, v in chosen), default=0.0)
        if penalty > 0.6:
            continue
        # A second look at the score with the redundancy known: skip if it now falls below the weakest viable.
        if chosen and score - weights.redundancy * penalty < scored[-1][0]:
            continue
        chosen.append((sent, vec))
        used += n
    return sorted((s for s, _ in chosen), key=lambda s: s.index)


def _same_as_title(sentence: str, title: str) -> bool:
    if not title:
        return False
    a, b = set(tokens(sentence)), set(tokens(title))
    return bool(a) and len(a & b) / len(a | b) > 0.8


def lead_sentences(text: str, n: int = 2, language: str | None = "en") -> str:
    """The first `n` sentences: the baseline every summary is measured against."""
    return " ".join(s.text for s in sentences(text, language)[:n])
