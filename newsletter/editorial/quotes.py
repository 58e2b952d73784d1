"""Key quotes: direct speech taken verbatim from the article, with its speaker when the text names one.

Direct speech is found by walking each paragraph's quote marks (straight, curly, German low-high, angle
quotes); a quotation left open at the end of a paragraph carries on into the next one, as English does for
speech that spans paragraphs. When nobody speaks in the article, its most quotable sentences stand in.
Every quote is checked to occur in the source text (after whitespace and quote-mark normalisation) before it
is kept, so a bug here can drop a quote but never invent one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from newsletter.text import (
    appears_in,
    cosine,
    idf_table,
    match_key,
    paragraphs,
    sentences,
    split_sentences,
    tf_vector,
    tokens,
    word_count,
)

MIN_WORDS = 6  # shorter than this is a fragment ("distressing", "common sense gun laws")
MAX_WORDS = 60
MAX_PARAGRAPHS = 3  # an unclosed quote mark must not swallow the rest of the article

_OPENERS = "“„«‹"
_CLOSERS = "”“»›"
_PAIRS = {"“": "”", "„": "“”", "«": "»", "‹": "›", '"': '"'}

_VERBS = (
    r"(?:said|says|say|told|tells|added|adds|explained|explains|noted|notes|wrote|writes|argued|argues|asked|"
    r"asks|stated|states|warned|warns|recalled|recalls|insisted|insists|continued|continues|replied|replies|"
    r"tweeted|posted|admitted|admits|acknowledged|acknowledges|declared|declares|remarked|remarks|"
    r"observed|observes|explained|conceded|concedes|predicted|predicts|responded|responds|announced|"
    r"announces|emphasized|emphasised|stressed|stresses|suggested|suggests|claimed|claims|joked|jokes|"
    # French, German, Spanish, Italian: the common reporting verbs, so speakers are named there too.
    r"a\s+déclaré|a\s+dit|a\s+affirmé|a\s+expliqué|a\s+ajouté|a\s+souligné|a\s+indiqué|a\s+estimé|"
    r"déclare|explique|affirme|ajoute|souligne|estime|précise|sagte|sagt|erklärte|erklärt|betonte|betont|"
    r"meinte|dijo|afirmó|explicó|añadió|señaló|aseguró|ha\s+detto|ha\s+dichiarato|ha\s+spiegato)"
)
_ACCORDING = r"(?:according\s+to|selon|laut|según|secondo)"
_UPPER = "A-ZÀ-ÖØ-ÞĆČĐŁŃŒŘŚŠŹŻŽ"
_TITLE = r"(?:(?:Mr|Mrs|Ms|Dr|Prof|Sen|Rep|Gov|Gen|Sir|Dame|President|Senator|Professor)\.?\s+)"
_NAME_WORD = rf"(?:[{_UPPER}]\.|[{_UPPER}][\w’'-]*)"  # "Ilic" or an initial "J."; never runs past a full stop
_NAME = rf"(?:{_TITLE}?{_NAME_WORD}(?:\s+(?:de|van|von|der|da|al|bin|le)?\s*{_NAME_WORD}){{0,3}})"
_PRONOUN = r"(?:he|she|they|He|She|They)"
_NOT_NAMES_TEXT = """The A An It This That These Those We I You But And So Or If In On At For As When While
After Before Then There Here His Her Their Its Our My Your"""
_NOT_NAMES = frozenset(_NOT_NAMES_TEXT.split())

# Right after the closing mark, within the same clause: ", said LeCun" / ", said transport chief Mara Ilic" /
# ", LeCun said" / ", he said" / ", according to LeCun" / ", developer Ammar Askar wrote".
_AFTER = re.compile(
    rf"^[\s,;:—–-]*(?:{_VERBS}\s+(?:(?:the\s+)?[a-zà-ÿ][\w’'-]*,?\s+){{0,3}}?(?P<a>{_NAME}|{_PRONOUN})\b"
    rf"|(?:[^.!?\"“”]{{0,60}}?\s)??(?P<b>{_NAME}|{_PRONOUN})\s+(?:{_VERBS}|has\s+said|had\s+said|once\s+said)\b"
    rf"|{_ACCORDING}\s+(?P<c>{_NAME}))"
)
# "LeCun said:" / "As LeCun put it," / "Uber tweeted this announcement:" right before the opening mark.
_BEFORE = re.compile(
    rf"(?:(?P<a>{_NAME}|{_PRONOUN})\s+(?:[a-z]+\s+){{0,3}}?(?:{_VERBS}|put\s+it|puts\s+it)"
    rf"(?:\s+[\w’'.-]+){{0,3}}?|{_ACCORDING}\s+(?P<c>{_NAME}))\s*[,:]?\s*(?:that\s+)?$"
)
_BEFORE_COLON = re.compile(rf"(?P<a>{_NAME})\s*:\s*$")


@dataclass(frozen=True)
class Quote:
    text: str
    speaker: str | None
    direct: bool  # direct speech, as opposed to a quotable sentence of the article
    paragraph: int
    position: int = 0  # order within the article, for display

    def as_dict(self) -> dict[str, str | None]:
        return {"text": self.text, "speaker": self.speaker}


@dataclass
class _Span:
    parts: list[str]
    start_para: int
    end_para: int
    before: str
    after: str


def _is_opening_straight(para: str, i: int) -> bool:
    prev = para[i - 1] if i > 0 else " "
    return prev.isspace() or prev in "([{—–-/" or prev in _OPENERS


def find_direct_speech(paras: list[str]) -> list[_Span]:
    """Quoted passages with the text just before and after them, in article order."""
    spans: list[_Span] = []
    open_close: str | None = None  # closing marks we wait for
    parts: list[str] = []
    start_para = 0
    start_pos = 0
    before = ""
    for p_index, para in enumerate(paras):
        if open_close is not None:
            if p_index - start_para >= MAX_PARAGRAPHS:
                open_close = None
                parts = []
            else:
                # Carry the quotation over; a new opening mark at the paragraph start is English style.
                start_pos = 1 if para[:1] in _OPENERS + '"' else 0
        i = start_pos if open_close is not None else 0
        while i < len(para):
            ch = para[i]
            if open_close is None:
                if ch in _OPENERS or (ch == '"' and _is_opening_straight(para, i)):
                    open_close = _PAIRS.get(ch, "”")
                    start_para, start_pos, before, parts = p_index, i + 1, para[:i], []
            elif ch in open_close or (ch == '"' and '"' in open_close) or (ch == "”" and open_close == '"'):
                parts.append(para[start_pos:i])
                spans.append(_Span(parts, start_para, p_index, before, para[i + 1 :]))
                open_close, parts = None, []
            elif ch in "“„«" and ch not in open_close and p_index == start_para:
                # A second opening mark before any close: the first was never closed; start again here.
                open_close = _PAIRS.get(ch, "”")
                start_pos, before = i + 1, para[:i]
            i += 1
        if open_close is not None:
            parts.append(para[start_pos:])
            start_pos = 0
    return spans


def _is_title(text: str) -> bool:
    """A book, film or report title in quotes, not speech: nearly every word capitalised, no full stop."""
    ws = [w for w in re.findall(r"[^\W\d_][\w’'-]*", text) if len(w) > 3]
    return bool(ws) and sum(w[0].isupper() for w in ws) / len(ws) > 0.7 and not text.rstrip().endswith(".")


def _clean_name(name: str | None) -> str | None:
    if not name:
        return None
    name = name.strip().rstrip(".,;:")
    first = name.split()[0]
    if first in _NOT_NAMES:
        return None
    return name


def _speaker(span: _Span) -> tuple[str | None, bool]:
    """(speaker, is_pronoun). Attribution after the quote wins, as it does in news style."""
    m = _AFTER.match(span.after)
    if m:
        name = m.group("a") or m.group("b") or m.group("c")
        if name and re.fullmatch(_PRONOUN, name):
            return None, True
        cleaned = _clean_name(name)
        if cleaned:
            return cleaned, False
    before = span.before.rstrip()[-200:]  # the attribution sits right before the mark; bounds regex work
    if before:
        m = _BEFORE_COLON.search(before) or _BEFORE.search(before)
        if m:
            name = m.group("a") or m.groupdict().get("c")
            if name and re.fullmatch(_PRONOUN, name):
                return None, True
            return _clean_name(name), False
    return None, False


_NARRATIVE = re.compile(rf"(?P<n>{_NAME})(?:,[^,.;\"“”]{{1,100}},)?\s+{_VERBS}\b")


def _narrative_speaker(text: str) -> str | None:
    """The last person the text has saying something in reported speech ("Okafor, who leads X, said")."""
    names = [_clean_name(m.group("n")) for m in _NARRATIVE.finditer(text[-600:])]
    names = [n for n in names if n]
    return names[-1] if names else None


def _quote_text(parts: list[str]) -> str:
    text = " ".join(p.strip() for p in parts if p.strip())
    return text.rstrip(" ,;:—–-").strip()


def _trim(text: str, language: str | None) -> str | None:
    """A quote over the word limit keeps its leading whole sentences; one that cannot is dropped."""
    if word_count(text) <= MAX_WORDS:
        return text
    out = ""
    for sent in split_sentences(text, language):
        candidate = f"{out} {sent}".strip()
        if word_count(candidate) > MAX_WORDS:
            break
        out = candidate
    return out or None


def _overlaps(text: str, others: list[str]) -> bool:
    key = match_key(text).lower()
    terms = set(tokens(text))
    for other in others:
        other_key = match_key(other).lower()
        if key in other_key or other_key in key:
            return True
        other_terms = set(tokens(other))
        if terms and other_terms and len(terms & other_terms) / len(terms | other_terms) > 0.5:
            return True
    return False


def extract_quotes(
    text: str,
    *,
    limit: int = 3,
    summary: str = "",
    language: str | None = "en",
    quotable_fallback: bool = True,
) -> list[Quote]:
    """Up to `limit` verbatim quotes from `text`, in article order; none that repeats `summary`."""
    if limit <= 0 or not text.strip():
        return []
    paras = paragraphs(text)
    summary_sents = split_sentences(summary, language) if summary else []
    doc_terms = tokens(" ".join(paras))
    candidates: list[tuple[float, Quote]] = []
    last_speaker: tuple[str, int] | None = None
    for position, span in enumerate(find_direct_speech(paras)):
        name, pronoun = _speaker(span)
        if name is None and pronoun:
            # "she said": the person the sentence before introduced ("Maria Okafor, who leads ..., said")
            name = _narrative_speaker(span.before)
        if name:
            last_speaker = (name, span.end_para)
        elif last_speaker and span.start_para - last_speaker[1] <= (3 if pronoun else 1):
            # "he said" refers back a few paragraphs; an unattributed quote right after an attributed one
            # continues the same speaker.
            name = last_speaker[0]
        elif pronoun and span.start_para > 0:
            name = _narrative_speaker(paras[span.start_para - 1])
        quote = _trim(_quote_text(span.parts), language)
        # A quote starting in lower case is the tail of a paraphrased sentence ('said the rules "will not ..."'):
        # it reads as a fragment on its own.
        if not quote or word_count(quote) < MIN_WORDS or _is_title(quote) or quote[:1].islower():
            continue
        candidates.append((0.0, Quote(quote, name, True, span.start_para, position)))
    chosen = _rank(candidates, doc_terms, limit, summary_sents, text)
    # Narration in quote marks next to real speech would pass for speech: sentences only when nobody speaks.
    if quotable_fallback and not chosen:
        pool = [(0.0, q) for q in _quotable_sentences(text, language)]
        chosen += _rank(pool, doc_terms, limit - len(chosen), summary_sents + [q.text for q in chosen], text)
    return sorted(chosen, key=lambda q: (not q.direct, q.paragraph, q.position))


def _rank(
    candidates: list[tuple[float, Quote]], doc_terms: list[str], limit: int, avoid: list[str], source: str
) -> list[Quote]:
    if not candidates or limit <= 0:
        return []
    idf = idf_table([tokens(q.text) for _, q in candidates] + [doc_terms])
    centroid = tf_vector(doc_terms, idf)
    scored = []
    for _, q in candidates:
        n = word_count(q.text)
        score = cosine(tf_vector(tokens(q.text), idf), centroid)
        score += 0.15 if q.speaker else 0.0
        score += 0.1 if 12 <= n <= 40 else 0.0
        scored.append((score, q))
    scored.sort(key=lambda x: -x[0])
    kept: list[Quote] = []
    for _, q in scored:
        if len(kept) >= limit:
            break
        if _overlaps(q.text, avoid + [k.text for k in kept]):
            continue
        if not appears_in(q.text, source):
            continue  # never show words the article does not contain
        kept.append(q)
    return kept


_WEAK_START = re.compile(
    r"^(?:but|and|so|or|yet|also|this|that|these|those|it|he|she|they|his|her|their|there|here|such|"
    r"however|meanwhile|then|which|when|while|because|if|as)\b",
    re.IGNORECASE,
)


def _quotable_sentences(text: str, language: str | None) -> list[Quote]:
    """Sentences that stand on their own: complete, assertive, no dangling reference, no half a quote."""
    out = []
    for sent in sentences(text, language):
        s = sent.text
        n = word_count(s)
        if n < 10 or n > 40 or s.endswith("?") or _WEAK_START.match(s):
            continue
        marks = sum(s.count(c) for c in '"“”„«»')
        if marks % 2:
            continue  # a piece of a longer quotation
        if re.search(r"\b(?:I|[Mm]e|[Mm]y|[Yy]ou|[Yy]our)\b", s):
            continue
        out.append(Quote(s, None, False, sent.paragraph, sent.index))
    return out
