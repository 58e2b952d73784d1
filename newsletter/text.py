"""Text helpers for the editorial steps: paragraphs without boilerplate, sentences, tokens, similarity.

Sentence splitting uses pysbd (rule-based, pure Python, no data to download) because abbreviations
("Mr.", "U.S."), decimals and quoted speech defeat a plain regex split.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pysbd

# Quote marks as they appear in the wild, mapped to their ASCII form for comparisons only: the text we show
# always keeps the publisher's own characters.
DOUBLE_QUOTES = '"“”„‟«»〝〞＂'
SINGLE_QUOTES = "'‘’‚‛‹›`´"
_QUOTE_TABLE = str.maketrans({**{c: '"' for c in DOUBLE_QUOTES}, **{c: "'" for c in SINGLE_QUOTES}})

_WS = re.compile(r"\s+")
# Chinese, Japanese and Korean do not separate words with spaces: each of their characters is a token, and
# two of them count as about one word (a Chinese word is one to three characters).
CJK_CHARS = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_CJK = re.compile(f"[{CJK_CHARS}]")
_CJK_RUN = re.compile(f"[{CJK_CHARS}]+")
_WORD = re.compile(rf"[{CJK_CHARS}]|[^\W{CJK_CHARS}]+(?:['’][^\W{CJK_CHARS}]+)*", re.UNICODE)
# Sentence ends of CJK text: 。！？ (and their half-width forms), with any closing quote or bracket after them.
_CJK_SENTENCE_END = re.compile(r"(?<=[。！？｡!?])(?![」』”’）)\]])|(?<=[。！？｡][」』”’）)\]])")

# Lines that are page furniture rather than article prose. Matched against a whole paragraph or sentence.
_BOILERPLATE = re.compile(
    r"""^\W*(?:
        image\s+(?:caption|copyright|source)|media\s+caption|photo(?:graph)?\s*(?:credit)?\s*:|
        (?:photo|image|picture|illustration)s?\s+(?:by|courtesy|credit)|credit\s*:|
        share\s+(?:this|on|via)|advertisement|sponsored|(?:click|tap)\s+here|read\s+(?:more|next)\b|
        (?:sign\s+up|subscribe)\b|follow\s+(?:us|@)|related\s*:|see\s+also\s*:|more\s+on\s+this|
        (?:by|written\s+by|reporting\s+by)\s+[A-Z][\w.'-]+(?:\s+[A-Z][\w.'-]+){0,3}\s*$|
        (?:updated|published|posted)\s*:?\s*(?:on\s+)?\d|
        all\s+rights\s+reserved|copyright\s+©?|©|
        \d+\s+comments?\s*$|from\s+the\s+section\b
    )""",
    re.IGNORECASE | re.VERBOSE,
)
# A credit glued to the end of a caption: "... (Photo: Jane Doe/Getty Images)".
_CREDIT = re.compile(r"(?:getty\s+images|shutterstock|associated\s+press\s+photo|afp\s+photo|reuters/)", re.I)
# "WASHINGTON (AP) — " or "LONDON — " at the start of a lede.
_DATELINE = re.compile(r"^[A-Z][A-Z .,'-]{2,40}(?:\([A-Za-z .]+\))?\s*[—–-]{1,2}\s+(?=[A-Z\"“])")

STOPWORDS = frozenset(
    """
    a about above after again against all also am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further had
    has have having he her here hers herself him himself his how i if in into is it its itself just
    me more most my myself no nor not now of off on once only or other our ours ourselves out over
    own said same says she should so some such than that the their theirs them themselves then there
    these they this those through to too under until up very was we were what when where which while
    who whom why will with would you your yours yourself yourselves one two new like get got also
    its it's i'm we're they're that's there's can't don't won't isn't mr mrs ms dr le la les de des
    du un une et est en que qui dans pour pas sur au aux il elle der die das und ist ein eine nicht
    mit von zu den el los las y es por con para una
    """.split()  # noqa: SIM905 - a word list reads better as text
)


def normalize_ws(text: str) -> str:
    return _WS.sub(" ", text).strip()


# Everything that ends a line somewhere: CR, LF, VT, FF, the C1 NEL (U+0085), U+2028/U+2029 and the
# information separators str.splitlines() honours, plus tabs and any other whitespace run.
_LINE_BREAKS = re.compile(r"[\s\x1c-\x1f\x85\u2028\u2029]+")
_CONTROLS = re.compile(r"[\x00-\x08\x0e-\x1b\x7f]")


def single_line(text: str | None, limit: int | None = None) -> str:
    """`text` on one line (titles, authors, names, subjects): every line break and control character gone,
    runs of whitespace as one space; cut to `limit` characters when given."""
    if not text:
        return ""
    # Already one clean line (the usual name or title): isprintable() is False for every line break, control
    # and whitespace character but the ASCII space, so only runs of spaces and the ends are left to check.
    if text.isprintable() and "  " not in text and text[0] != " " and text[-1] != " ":
        line = text
    else:
        line = _LINE_BREAKS.sub(" ", _CONTROLS.sub("", text)).strip()
    return line[:limit].rstrip() if limit is not None else line


def normalize_quotes(text: str) -> str:
    """Curly, low-9 and angle quote marks become ASCII ones; for matching, never for display."""
    return text.translate(_QUOTE_TABLE)


def canonical(text: str) -> str:
    """The form two strings are compared in: NFKC, ASCII quote marks, single spaces."""
    return normalize_ws(normalize_quotes(unicodedata.normalize("NFKC", text)))


def match_key(text: str) -> str:
    """Canonical text without double quote marks, so a quote that runs over two paragraphs (each opening
    with its own mark) still matches its source."""
    return normalize_ws(canonical(text).replace('"', " "))


def appears_in(fragment: str, text: str) -> bool:
    """Whether `fragment` occurs in `text` after whitespace and quote-mark normalisation."""
    key = match_key(fragment)
    return bool(key) and key in match_key(text)


def words(text: str) -> list[str]:
    return _WORD.findall(text)


def word_count(text: str | None) -> int:
    """Words of `text`; a run of CJK characters counts as half as many words as it has characters."""
    text = text or ""
    cjk = len(_CJK.findall(text))
    return len(_WORD.findall(text)) - cjk + (cjk + 1) // 2


def _stem(token: str) -> str:
    # A light suffix strip so "launches"/"launched"/"launch" meet; full stemmers need per-language data.
    for suffix in ("ing", "ed", "es", "s"):
        if token.endswith(suffix) and len(token) - len(suffix) >= 3:
            return token[: -len(suffix)]
    return token


def tokens(text: str) -> list[str]:
    """Index terms: lowercased words without stopwords, lightly stemmed."""
    return list(_tokens(text))


@lru_cache(maxsize=16_384)  # summary, quotes and related reading each read the same sentences and headlines
def _tokens(text: str) -> tuple[str, ...]:
    out = []
    for w in _WORD.findall(text.lower()):
        w = w.replace("’", "'")
        if w in STOPWORDS or len(w) < 2 or w.isdigit():
            continue
        out.append(_stem(w))
    # CJK: overlapping character pairs, the usual index terms for scripts without spaces.
    for run in _CJK_RUN.findall(text):
        out += [run[i : i + 2] for i in range(len(run) - 1)] if len(run) > 1 else [run]
    return tuple(out)


def is_boilerplate(text: str) -> bool:
    text = text.strip()
    return bool(_BOILERPLATE.match(text)) or (bool(_CREDIT.search(text)) and word_count(text) < 25)


def strip_dateline(sentence: str) -> str:
    return _DATELINE.sub("", sentence, count=1)


def paragraphs(text: str) -> list[str]:
    """Prose paragraphs of an extracted text: one per line, boilerplate, list bullets and headings dropped."""
    out = []
    for raw in (text or "").splitlines():
        line = normalize_ws(raw)
        if not line or is_boilerplate(line):
            continue
        out.append(line)
    return out


def is_prose(paragraph: str) -> bool:
    """A paragraph of running text rather than a heading, a list item or a caption."""
    if paragraph.startswith(("- ", "* ", "• ", "|")):
        return False
    return word_count(paragraph) >= 6 and paragraph.rstrip("\"'”’)»」』）").endswith(
        (".", "!", "?", "…", ":", "。", "！", "？", "｡")
    )


# pysbd is imported on the first sentence split, not with this module: the store's models use single_line, and
# every command that opens the database would pay for loading pysbd's rules for two dozen languages.
@cache
def _pysbd_languages() -> frozenset[str]:
    import pysbd

    return frozenset(pysbd.languages.LANGUAGE_CODES)


@cache
def _segmenter(language: str) -> pysbd.Segmenter:
    import pysbd

    return pysbd.Segmenter(language=language, clean=False, char_span=False)


def language_code(language: str | None) -> str:
    code = (language or "en").split("-")[0].split("_")[0].lower()
    return code if code in _pysbd_languages() else "en"


def split_sentences(paragraph: str, language: str | None = "en") -> list[str]:
    return list(_split_sentences(paragraph, language))


# pysbd is the slowest step of reading a story, and the same paragraphs come back: the summary's sentences for its
# quotes, each rebuild of a draft, an archive story's blurb under several issues. Keyed by the text itself.
@lru_cache(maxsize=8192)
def _split_sentences(paragraph: str, language: str | None) -> tuple[str, ...]:
    known = _KNOWN_SPLITS.get((paragraph, language))
    if known is not None:
        return known
    paragraph = normalize_ws(paragraph)
    if not paragraph:
        return ()
    if _CJK.search(paragraph) and re.search("[。！？｡]", paragraph):
        # pysbd's English rules never split at 。, and its zh/ja rules need the language to be known.
        return tuple(p.strip() for p in _CJK_SENTENCE_END.split(paragraph) if p.strip())
    try:
        parts = _segmenter(language_code(language)).segment(paragraph)
    except Exception:  # pysbd has rare regex failures on odd input; one sentence is better than none
        parts = [paragraph]
    return tuple(p.strip() for p in parts if p.strip())


# Splits made in another process and stored with the article (remember_splits), by (paragraph, language code).
_KNOWN_SPLITS: dict[tuple[str, str | None], tuple[str, ...]] = {}
_MAX_KNOWN = 50_000
# Bumped whenever _split_sentences or the paragraphs it is given change: splits stored before are then ignored.
SPLIT_RULES = 1


@cache
def _splits_version() -> str:
    import pysbd

    return f"pysbd {pysbd.__version__}, rules {SPLIT_RULES}"


def _prose_paragraphs(text: str) -> list[str]:
    """The paragraphs `sentences` splits, in order."""
    return [p for p in paragraphs(text) if is_prose(p)]


def sentence_splits(text: str, language: str | None = "en") -> dict[str, Any]:
    """How `sentences` splits `text`'s prose paragraphs, to be stored with the article: another process hands it
    to remember_splits and skips pysbd, the slowest step of reading a story (cached here, so free after the
    summary was made)."""
    code = language_code(language)
    return {"version": _splits_version(), "language": code,
            "splits": [list(_split_sentences(p, code)) for p in _prose_paragraphs(text)]}


def remember_splits(text: str, language: str | None, stored: Any) -> bool:
    """Take splits `sentence_splits` made of this very text, with the same pysbd and rules, for the sentences of
    `text` from now on; False (and nothing taken) when they are of another text, version or language."""
    code = language_code(language)
    if not isinstance(stored, dict) or stored.get("version") != _splits_version() or stored.get("language") != code:
        return False
    prose = _prose_paragraphs(text)
    splits = stored.get("splits")
    if not isinstance(splits, list) or len(splits) != len(prose):
        return False
    taken = []
    for paragraph, split in zip(prose, splits, strict=True):
        flat = normalize_ws(paragraph)
        if not isinstance(split, list) or not all(isinstance(x, str) and x and x in flat for x in split):
            return False  # not this text's: a sentence the paragraph does not hold
        taken.append(((paragraph, code), tuple(split)))
    if len(_KNOWN_SPLITS) + len(taken) > _MAX_KNOWN:
        _KNOWN_SPLITS.clear()
    _KNOWN_SPLITS.update(taken)
    return True


def remember_joined(text: str, language: str | None, parts: Sequence[str]) -> None:
    """`text` is made of these sentences (a summary of picked sentences): split_sentences(text, language) gives
    them back without running pysbd over sentences already split once."""
    if parts and all(part and part in text for part in parts):
        if len(_KNOWN_SPLITS) >= _MAX_KNOWN:
            _KNOWN_SPLITS.clear()
        _KNOWN_SPLITS[(text, language)] = tuple(parts)


@dataclass(frozen=True)
class Sentence:
    text: str
    index: int  # position in the article, from 0
    paragraph: int


def sentences(text: str, language: str | None = "en") -> list[Sentence]:
    """Sentences of the prose paragraphs, in order, boilerplate removed."""
    return list(_sentences(text, language_code(language)))


@lru_cache(maxsize=64)  # the summary and the quotes of one story split the same text
def _sentences(text: str, language: str) -> tuple[Sentence, ...]:
    out: list[Sentence] = []
    for p_index, para in enumerate(paragraphs(text)):
        if not is_prose(para):
            continue
        for sent in split_sentences(para, language):
            if is_boilerplate(sent):
                continue
            out.append(Sentence(sent, len(out), p_index))
    return tuple(out)


def tf_vector(terms: Iterable[str], idf: dict[str, float] | None = None) -> dict[str, float]:
    """Sublinear tf (times idf when given), L2-normalised."""
    counts = Counter(terms)
    vec = {t: (1.0 + math.log(c)) * (idf.get(t, 1.0) if idf is not None else 1.0) for t, c in counts.items()}
    norm = math.sqrt(sum(v * v for v in vec.values()))
    return {t: v / norm for t, v in vec.items()} if norm else {}


def cosine(a: dict[str, float], b: dict[str, float]) -> float:
    if len(a) > len(b):
        a, b = b, a
    return sum(v * b.get(t, 0.0) for t, v in a.items())


def idf_table(documents: Iterable[Iterable[str]]) -> dict[str, float]:
    df: Counter[str] = Counter()
    n = 0
    for doc in documents:
        n += 1
        df.update(set(doc))
    return {t: math.log((1 + n) / (1 + c)) + 1.0 for t, c in df.items()}


def clip_words(text: str, max_chars: int) -> str:
    """At most `max_chars`, cut at a word boundary with an ellipsis (for one-line blurbs, not summaries)."""
    text = normalize_ws(text)
    if len(text) <= max_chars:
        return text
    cut = text[: max_chars - 1].rsplit(" ", 1)[0].rstrip(",;:-—– ")
    return cut + "…"
