"""Key quotes of one story, of two kinds that are never confused, each verbatim at its offsets in the article.

- `speech`: words inside quotation marks in the article, with the speaker as the article names them. Quoted
  passages are found by walking each paragraph's quote marks (straight, curly, German low-high, angle quotes);
  a quotation left open at the end of a paragraph carries on into the next one, as English does for speech
  that spans paragraphs. A speaker is a name the text gives right by the quote ('…," said Mara Ilic',
  'Helen Clark said: "…"', 'saying, "…"'); a pronoun resolves to the last person the text named near it that it
  can refer to; a capitalised word that is not a name ("She", "Don't", "Police") is never a speaker. When in
  doubt there is no speaker rather than a wrong one.
- `passage`: a key statement of the writer's own, pulled from the article when nobody speaks in it. Shown
  without quotation marks and credited to the publication. Only a sentence that stands on its own and states
  something: never page furniture ("watch the video below", "subscribe", "run r2e pause"), never one that leans
  on its neighbour ("This means…", "…the following:"), never one that repeats the summary. Each rejected
  candidate is counted by reason when the caller asks (the benchmark reports them).

Every quote carries `start`/`end`, character offsets into the text it was taken from, and is checked to occur
there before it is kept, so a bug here can drop a quote but never invent one.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

from newsletter.text import (
    cosine,
    idf_table,
    is_boilerplate,
    match_key,
    normalize_ws,
    sentences,
    split_sentences,
    tf_vector,
    tokens,
    word_count,
)

SPEECH = "speech"
PASSAGE = "passage"
KINDS = (SPEECH, PASSAGE)

MIN_WORDS = 6  # shorter than this is a fragment ("distressing", "common sense gun laws")
MAX_WORDS = 60
MAX_PARAGRAPHS = 3  # an unclosed quote mark must not swallow the rest of the article
PRONOUN_REACH = 3  # paragraphs back a "she said" may refer to

_OPENERS = "“„«‹「『"
_CLOSERS = "”“»›」』"
_PAIRS = {"“": "”", "„": "“”", "«": "»", "‹": "›", '"': '"', "「": "」", "『": "』"}
# Every character find_direct_speech acts on: it looks at these only, instead of at each character in turn.
_MARKS = re.compile(f"[{re.escape(_OPENERS + _CLOSERS + chr(34))}]")

_VERBS = (
    r"(?:said|says|say|told|tells|added|adds|explained|explains|noted|notes|wrote|writes|argued|argues|asked|"
    r"asks|stated|states|warned|warns|recalled|recalls|insisted|insists|continued|continues|replied|replies|"
    r"tweeted|posted|admitted|admits|acknowledged|acknowledges|declared|declares|remarked|remarks|"
    r"observed|observes|conceded|concedes|predicted|predicts|responded|responds|announced|"
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
_PRONOUN = r"(?:he|she|they|it|He|She|They|It)"
# Lower-case words allowed between a reporting verb and the name ("said transport chief Mara Ilic"), but not a
# preposition: in 'said in a letter to Abbott' Abbott is who was written to, not who wrote.
_DESCRIPTOR = r"(?!(?:to|in|at|on|with|by|for|of|from|about|during|after|before|last|into)\b)"

# Capitalised words that start sentences but never name anyone. A single-word "name" whose lower-case form
# the article also uses is treated the same way (see _Names.clean).
_NOT_NAMES = frozenset(
    """The A An It Its This That These Those We I You But And So Or If In On At For As When While After Before
    Then There Here His Her Hers Their Its Our My Your He She They Them Him Us Me Who What Why How Where Which
    Some Many Most All Every Each One Both Neither Either Also Still Even Just Only Once Later Earlier Now
    Today Yesterday Tomorrow Meanwhile However Instead Yes No Not Never Please Let Do Does Did Is Are Was Were
    Has Have Had Will Would Can Could Should May Might Must Shall Said Says Asked According Speaking Writing
    Last Next First Another Other Others Such Because Although Though Since Until Unless Whether Thanks Dear
    Officials Police Critics Experts People Residents Sources Analysts Researchers Scientists Officers
    Monday Tuesday Wednesday Thursday Friday Saturday Sunday""".split()  # noqa: SIM905 - a word list reads better as text
)
_CONTRACTION = re.compile(r"['’](?:t|s|ll|re|ve|d|m)$", re.IGNORECASE)
_ORG_WORD = re.compile(
    r"\b(?:Inc|Corp|Corporation|Ltd|LLC|plc|Group|Company|Co|Ministry|Department|Agency|Council|Commission|"
    r"University|Institute|Foundation|Association|Office|Party|Bank|Court|Police|Authority|Board|Service)\b\.?"
)
_ACRONYM = re.compile(r"^[A-Z]{2,6}$")

# Right after the closing mark, within the same clause: ", said LeCun" / ", said transport chief Mara Ilic" /
# ", LeCun said" / ", he said" / ", according to LeCun" / ", developer Ammar Askar wrote" / ", it said in a
# statement".
_AFTER = re.compile(
    rf"^[\s,;:—–-]*(?:{_VERBS}\s+(?:(?:the\s+)?{_DESCRIPTOR}[a-zà-ÿ][\w’'-]*,?\s+){{0,3}}?"
    rf"(?P<a>{_PRONOUN}|{_NAME})\b"
    rf"|(?:[^.!?\"“”]{{0,60}}?\s)??(?P<b>{_PRONOUN}|{_NAME})\s+(?:{_VERBS}|has\s+said|had\s+said|once\s+said)\b"
    rf"|{_ACCORDING}\s+(?P<c>{_NAME}))"
)
# A verb right after the quote with no name: the subject came before the opening mark
# ('The mayors "…" said in a letter to Abbott last month').
_AFTER_VERB_ONLY = re.compile(rf"^[\s,;:—–-]*(?:{_VERBS}|has\s+said)\b")
# Before the opening mark, in the same clause: "LeCun said:" / "As LeCun put it," / "Uber tweeted this:" /
# "Obama responded on Twitter, saying,".
_BEFORE = re.compile(
    rf"^(?P<a>{_PRONOUN}|{_NAME})\s+(?:[a-z]+\s+){{0,3}}?(?:{_VERBS}|put\s+it|puts\s+it)"
    rf"(?:\s+[\w’'.-]+){{0,3}}?\s*[,:]?\s*(?:that\s+)?$"
)
# A colon closes the attribution however long it is ('Ann Ruiz said in a letter to the board last month:').
_BEFORE_LONG_COLON = re.compile(
    rf"^(?P<a>{_PRONOUN}|{_NAME})\s+(?:[a-z]+\s+){{0,3}}?{_VERBS}(?:\s+[\w’'.-]+){{0,8}}?\s*:\s*$"
)
_BEFORE_SAYING = re.compile(rf"^(?P<a>{_PRONOUN}|{_NAME})\b[^.!?\"“”]{{0,120}}?,?\s+saying\s*[,:]?\s*$")
_BEFORE_ACCORDING = re.compile(rf"{_ACCORDING}\s+(?P<c>{_NAME})\s*[,:]?\s*$")
_BEFORE_COLON = re.compile(rf"(?P<a>{_NAME})\s*:\s*$")
_BEFORE_SUBJECT = re.compile(rf"(?P<a>{_NAME})\s*,?\s*$")
_NAME_START = re.compile(rf"(?<![\w’'-])(?:{_PRONOUN}|{_NAME})\b")
_NARRATIVE = re.compile(rf"(?P<n>{_NAME})(?:,[^,.;\"“”]{{1,100}},)?\s+(?:{_VERBS}|has\s+said|had\s+said)\b")
_TITLED = re.compile(rf"{_TITLE}{_NAME_WORD}(?:\s+{_NAME_WORD})?")


@dataclass(frozen=True)
class Quote:
    text: str
    speaker: str | None
    kind: str  # SPEECH or PASSAGE
    start: int  # text[start:end] of the article text is this quote (a multi-paragraph one: with its breaks)
    end: int
    paragraph: int = 0
    position: int = 0  # order within the article, for display

    @property
    def direct(self) -> bool:
        return self.kind == SPEECH

    def as_dict(self) -> dict[str, str | int | None]:
        return {"text": self.text, "speaker": self.speaker, "kind": self.kind, "start": self.start, "end": self.end}


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
        for mark in _MARKS.finditer(para, start_pos if open_close is not None else 0):
            i = mark.start()
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
        if open_close is not None:
            parts.append(para[start_pos:])
            start_pos = 0
    return spans


def _is_title(text: str) -> bool:
    """A book, film or report title in quotes, not speech: nearly every word capitalised, no full stop."""
    ws = [w for w in re.findall(r"[^\W\d_][\w’'-]*", text) if len(w) > 3]
    return bool(ws) and sum(w[0].isupper() for w in ws) / len(ws) > 0.7 and not text.rstrip().endswith(".")


def _is_pronoun(name: str | None) -> bool:
    return bool(name) and re.fullmatch(_PRONOUN, name or "") is not None


def _is_org(name: str) -> bool:
    return bool(_ORG_WORD.search(name) or _ACRONYM.match(name))


class _Names:
    """What counts as a name in this article: a capitalised word the article never uses in lower case."""

    def __init__(self, text: str) -> None:
        self.lower = set(re.findall(r"(?<![\w./@-])[a-z][\w’'-]*\b(?![./@]\w)", text))

    def clean(self, name: str | None) -> str | None:
        if not name:
            return None
        name = name.strip().rstrip(".,;:")
        parts = name.split()
        if not parts or _is_pronoun(name):
            return None
        if parts[0].rstrip(".") in _NOT_NAMES or any(_CONTRACTION.search(p) for p in parts):
            return None
        if len(parts) == 1 and not _ACRONYM.match(name) and name.lower() in self.lower:
            return None  # "Police", "Critics", "Don't": a common word that happened to start the sentence
        return name


def _last_clause(before: str) -> str:
    """The part of the text before a quote that belongs to its sentence."""
    before = before[-300:]
    cut = max(before.rfind(". "), before.rfind("! "), before.rfind("? "), before.rfind("” "), before.rfind('" '))
    return before[cut + 2 :] if cut >= 0 else before


def _speaker_before(before: str, names: _Names) -> tuple[str | None, str | None]:
    """(name, pronoun) named in the clause right before the opening mark."""
    clause = _last_clause(before).rstrip()
    if not clause:
        return None, None
    m = _BEFORE_COLON.search(clause)
    if m and names.clean(m.group("a")):
        return names.clean(m.group("a")), None
    m = _BEFORE_ACCORDING.search(clause)
    if m and names.clean(m.group("c")):
        return names.clean(m.group("c")), None
    for start in _NAME_START.finditer(clause):
        rest = clause[start.start() :]
        m = _BEFORE.match(rest) or _BEFORE_LONG_COLON.match(rest) or _BEFORE_SAYING.match(rest)
        if not m:
            continue
        found = m.group("a")
        if _is_pronoun(found):
            return None, found.lower()
        if names.clean(found):
            return names.clean(found), None
    return None, None


def _speaker(span: _Span, names: _Names) -> tuple[str | None, str | None]:
    """(speaker, pronoun): the name the text gives, or the pronoun it uses instead. Attribution after the
    quote wins, as it does in news style."""
    m = _AFTER.match(span.after)
    if m:
        found = m.group("a") or m.group("b") or m.group("c")
        if _is_pronoun(found):
            return None, found.lower()
        cleaned = names.clean(found)
        if cleaned:
            return cleaned, None
    if _AFTER_VERB_ONLY.match(span.after):
        m = _BEFORE_SUBJECT.search(span.before.rstrip())
        return (names.clean(m.group("a")) if m else None), None
    return _speaker_before(span.before, names)


def _people_mentioned(text: str, names: _Names) -> list[str]:
    """People and organisations the text has saying something, names with a title, and organisations, in
    order."""
    found: list[tuple[int, str]] = []
    for m in re.finditer(_NAME, text):
        if _is_org(m.group(0)) and names.clean(m.group(0)):
            found.append((m.start(), m.group(0)))
    for m in _NARRATIVE.finditer(text):
        name = names.clean(m.group("n"))
        if name:
            found.append((m.start(), name))
    for m in _TITLED.finditer(text):
        name = names.clean(m.group(0))
        if name:
            found.append((m.start(), name))
    return [n for _, n in sorted(found)]


def _mentions_other(before: str, speaker: str, names: _Names) -> bool:
    """Whether the words since the previous quotation (in this paragraph) name anyone but `speaker`."""
    cut = max(before.rfind(c) for c in '"”»›」')
    # Only a name that opens a sentence of its own is someone new speaking ('Jones disagreed:'); names inside
    # the attribution ('said Ann Ruiz, CEO of Acme, in a note.') are not.
    found = (names.clean(m.group("n")) for m in re.finditer(rf"[.!?]\s+(?P<n>{_NAME})", before[cut + 1 :].strip()))
    return any(n and n not in speaker and speaker not in n for n in found)


def _can_refer(pronoun: str, name: str) -> bool:
    if pronoun == "it":
        return _is_org(name)
    if pronoun == "they":
        return False  # a group or a person: too unsure to name anyone
    if _is_org(name):
        return False
    if pronoun == "she":
        return not re.match(r"(?:Mr|Sir)\b", name)
    return not re.match(r"(?:Mrs|Ms|Miss|Dame)\b", name)


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


def _locate(fragment: str, text: str, hint: int = 0) -> tuple[int, int] | None:
    """Where `fragment` occurs in `text` (from `hint` on, else anywhere): exactly, or across the line breaks and
    opening marks of a quotation that runs over paragraphs."""
    for start in (hint, 0):
        i = text.find(fragment, start)
        if i >= 0:
            return i, i + len(fragment)
    pieces = fragment.split()
    if not pieces:
        return None
    pattern = re.compile(r"\s+(?:[\"“„«‹]\s*)?".join(re.escape(p) for p in pieces))
    m = pattern.search(text, hint) or pattern.search(text)
    return (m.start(), m.end()) if m else None


def _paragraph_offsets(text: str) -> list[tuple[str, int]]:
    """The paragraphs the quote finder walks (one per non-empty line, whitespace normalised), each with where
    its line starts in `text`."""
    out = []
    pos = 0
    for raw in text.splitlines(keepends=True):
        line = normalize_ws(raw)
        if line and not is_boilerplate(line):
            out.append((line, pos))
        pos += len(raw)
    return out


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
    rejected: Counter[str] | None = None,
) -> list[Quote]:
    """Up to `limit` verbatim quotes from `text`: speech in article order, or, when nobody speaks, passages.

    None repeats `summary`. `rejected`, when given, counts the candidate passages turned down, by reason.
    """
    if limit <= 0 or not text.strip():
        return []
    located, paras, names, doc_terms = _read(text)
    summary_sents = split_sentences(summary, language) if summary else []
    candidates: list[Quote] = []
    last: tuple[str, int] | None = None  # the last speaker named, and the paragraph
    for position, span in enumerate(find_direct_speech(paras)):
        name, pronoun = _speaker(span, names)
        if name is None and pronoun:
            # "she said": the last person the text named, a few paragraphs back at most, that "she" can be.
            window = " ".join(paras[max(0, span.start_para - PRONOUN_REACH) : span.start_para] + [span.before])
            people = [p for p in _people_mentioned(window, names) if _can_refer(pronoun, p)]
            if not people and last and span.start_para - last[1] <= PRONOUN_REACH and _can_refer(pronoun, last[0]):
                people = [last[0]]
            name = people[-1] if people else None
        elif name is None and last and last[1] == span.start_para and not _mentions_other(span.before, last[0], names):
            # Unattributed speech that goes on in the same paragraph, right after an attributed one ('"…," she
            # said. "…"') continues the same speaker; in the next paragraph it may be anyone (a thread).
            name = last[0]
        if name:
            last = (name, span.end_para)
        quote = _trim(_quote_text(span.parts), language)
        # A quote starting in lower case is the tail of a paraphrased sentence ('said the rules "will not ..."'):
        # it reads as a fragment on its own.
        if not quote or word_count(quote) < MIN_WORDS or _is_title(quote) or quote[:1].islower():
            continue
        where = _locate(quote, text, located[span.start_para][1])
        if where is None:
            continue  # never show words the article does not contain
        start, end = where
        shown = text[start:end] if "\n" not in text[start:end] else quote
        candidates.append(Quote(shown, name, SPEECH, start, end, span.start_para, position))
    chosen = _rank(candidates, doc_terms, limit, summary_sents)
    # Narration next to real speech would pass for more speech: passages only when nobody speaks.
    if quotable_fallback and not chosen:
        chosen = _rank(_passages(text, language, rejected), doc_terms, limit, summary_sents, rejected)
    return sorted(chosen, key=lambda q: (q.kind != SPEECH, q.paragraph, q.position))


@lru_cache(maxsize=64)  # a rebuild of the issue reads the same articles again; nothing here is changed after
def _read(text: str) -> tuple[list[tuple[str, int]], list[str], _Names, list[str]]:
    """What the quote finder reads of an article once: its paragraphs with their offsets, its names, its words."""
    located = _paragraph_offsets(text)
    paras = [p for p, _ in located]
    return located, paras, _Names(text), tokens(" ".join(paras))


def _rank(
    candidates: list[Quote],
    doc_terms: list[str],
    limit: int,
    avoid: list[str],
    rejected: Counter[str] | None = None,
) -> list[Quote]:
    if not candidates or limit <= 0:
        return []
    idf = idf_table([tokens(q.text) for q in candidates] + [doc_terms])
    centroid = tf_vector(doc_terms, idf)
    scored = []
    for q in candidates:
        n = word_count(q.text)
        score = cosine(tf_vector(tokens(q.text), idf), centroid)
        score += 0.15 if q.speaker else 0.0
        score += 0.1 if 12 <= n <= 40 else 0.0
        scored.append((score, q))
    scored.sort(key=lambda x: -x[0])
    kept: list[Quote] = []
    for _, q in scored:
        if len(kept) >= limit:
            if rejected is None:
                break
            rejected["not among the best"] += 1
            continue
        if _overlaps(q.text, avoid + [k.text for k in kept]):
            if rejected is not None:
                rejected["repeats the summary or another pick"] += 1
            continue
        kept.append(q)
    return kept


# Openers that lean on the sentence before ("This means…", "But…", "He…").
_WEAK_START = re.compile(
    r"^(?:but|and|so|or|yet|also|this|that|these|those|it|its|he|she|they|his|her|their|there|here|such|"
    r"however|meanwhile|then|which|when|while|because|if|as|still|instead|thus|other|others|another|both|"
    r"later|earlier|now|indeed|moreover|furthermore|in\s+addition|for\s+example|for\s+instance|as\s+a\s+result)\b",
    re.IGNORECASE,
)
# Sentences that point at something else on the page.
_POINTS_AWAY = re.compile(
    r"\b(?:below|above|the\s+following|as\s+follows|here'?s\s+how|see\s+(?:the\s+)?(?:video|photos?|chart|map|"
    r"image|table|list)|(?:in|at)\s+the\s+(?:video|clip|footage|gallery|photo|image|chart|map)s?)\b|:\s*$",
    re.IGNORECASE,
)
# Page furniture and instructions to the reader rather than a statement of the story.
_FURNITURE = re.compile(
    r"\b(?:subscribe|sign\s+up|newsletter|click|tap|share\s+(?:this|on|via)|follow\s+(?:us|@)|download|"
    r"watch|video|footage|podcast|listen|read\s+(?:more|next|on)|check\s+(?:out|it)|comments?\s+section|"
    r"cookies?|privacy\s+policy|terms\s+of\s+(?:use|service)|advert|sponsored|affiliate|all\s+rights)\b"
    r"|^(?:to\s+\w+|simply|just|first|next|then|now|please|make\s+sure|be\s+sure|don'?t|do\s+not|try|use|run|"
    r"type|enter|open|go\s+to|visit|find|see|get|install|add)\b"
    r"|`|\$\s|\b\w+\.(?:py|sh|js|json|yml|yaml|toml|exe)\b|--\w",
    re.IGNORECASE,
)
_PERSONAL = re.compile(r"\b(?:I|[Mm]e|[Mm]y|[Yy]ou|[Yy]our|[Ww]e|[Oo]ur|[Uu]s)\b")
# A claim has a finite verb: a rough test, but a headline fragment or a list item usually has none.
_FINITE = re.compile(
    r"\b(?:is|are|was|were|be|been|has|have|had|will|would|can|could|may|might|must|should|does|do|did|"
    r"\w+(?:ed|es|s))\b",
    re.IGNORECASE,
)
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")


def _passage_problem(s: str) -> str | None:
    """Why a sentence cannot stand as a pulled passage, or None if it can."""
    n = word_count(s)
    cjk = len(_CJK.findall(s))
    if cjk:
        if not 15 <= cjk <= 120:
            return "too short or too long"
    elif n < 10 or n > 40:
        return "too short or too long"
    if s.endswith(("?", "!")) or s.endswith(("？", "！")):
        return "question or exclamation"
    if _FURNITURE.search(s):
        return "page furniture"
    if _WEAK_START.match(s.lstrip("\"“'‘ ")) or _POINTS_AWAY.search(s):
        return "needs its neighbour"
    marks = sum(s.count(c) for c in '"“”„«»「」')
    if marks % 2:
        return "part of a quotation"
    if marks:
        return "contains speech"  # the quoted words belong to someone; show them as speech or not at all
    if _PERSONAL.search(s):
        return "first person or direct address"
    if not cjk and not _FINITE.search(s):
        return "no claim"
    return None


def _passages(text: str, language: str | None, rejected: Counter[str] | None) -> list[Quote]:
    """Sentences that stand on their own as a statement of the story, located in `text`."""
    out = []
    hint = 0
    for sent in sentences(text, language):
        problem = _passage_problem(sent.text)
        if problem is None:
            where = _locate(sent.text, text, hint)
            if where is None:
                problem = "not found verbatim"
            else:
                hint = where[0]
                start, end = where
                out.append(Quote(text[start:end], None, PASSAGE, start, end, sent.paragraph, sent.index))
                continue
        if rejected is not None:
            rejected[problem] += 1
    return out
