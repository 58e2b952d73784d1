"""Headlines a reader can read: feed titles cleaned, truncations completed, subject lines that fit an inbox.

Feeds hand over titles as their software made them: Tumblr prefixes a reblog with the blog's name
("sarahseeandersen:Hi friends!I am so happy..."), many cut the title from the post's first words and end
it with "..." or "…", some leave entities or tags in. The original item is untouched; this is what the
issue shows.
"""

from __future__ import annotations

import html
import re

from newsletter.text import normalize_ws

SUBJECT_CHARS = 70  # what inboxes show of a subject line on a phone and in a desktop list, roughly
MAX_HEADLINE_CHARS = 200  # a truncated title is completed from the text up to the end of its sentence, not further

_TAG = re.compile(r"<[^>]{0,500}>")
# A blog name glued to the title by a colon: lowercase, no spaces, and no space after the colon (a headline's
# own "Update: ..." has a capital and a space; a URL has "//").
_USER_PREFIX = re.compile(r"^[a-z0-9][a-z0-9-]{1,49}:(?!//)(?=\S)")
_GLUED_SENTENCE = re.compile(r"(?<=[a-z])([!?])(?=[A-Z])")  # "friends!I am": the feed dropped the space
_TRUNCATED = re.compile(r"\s*(?:\.{3}|…)\s*$")


def clean_title(title: str) -> tuple[str, bool]:
    """(the title without markup, blog-name prefix or doubled spaces, whether the feed cut it short)."""
    text = html.unescape(_TAG.sub(" ", title or ""))
    text = normalize_ws(text)
    text = _USER_PREFIX.sub("", text, count=1).strip()
    text = _GLUED_SENTENCE.sub(r"\1 ", text)
    truncated = bool(_TRUNCATED.search(text))
    if truncated:
        text = _TRUNCATED.sub("", text).rstrip(" ,;:-")
    return text, truncated


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def headline(title: str, text: str = "", article_title: str | None = None) -> str:
    """The headline to show: the article's own when the feed's is a cut-off start of it, else the feed's
    cleaned, a cut-off one completed to the end of its sentence from the story's text when the text starts
    with it. A cut-off title that cannot be completed keeps one "…", so it says it is cut."""
    clean, truncated = clean_title(title)
    if not truncated:
        return clean or normalize_ws(title or "")
    start = _words(clean)
    if article_title:
        own, _ = clean_title(article_title)
        if start and _words(own)[: len(start)] == start:
            return own
    body, _ = clean_title(text[: MAX_HEADLINE_CHARS * 2]) if text else ("", False)
    if _USER_PREFIX.match(normalize_ws(html.unescape(title or ""))):
        body = re.sub(r"^[a-z0-9][a-z0-9-]{1,49}\s*:\s*", "", body, count=1)  # the reblog's text carries it too
    if start and _words(body)[: len(start)] == start:
        # The sentence the title was cut from: through the first sentence end after the title's words.
        at = len(clean) if body.lower().startswith(clean.lower()) else 0
        end = re.search(r"[.!?…](?=\s|$)", body[at:])
        if end is not None and at + end.end() <= MAX_HEADLINE_CHARS:
            return body[: at + end.end()].rstrip(".")
    return f"{clean}…" if clean else normalize_ws(title or "")


def fit_subject(template_filled: str, top_title: str, limit: int = SUBJECT_CHARS) -> str:
    """`template_filled` (which contains `top_title`) shortened to `limit` characters by cutting the title at a
    word, with "…"; unchanged when it fits or when the rest of the template alone is too long to help."""
    if len(template_filled) <= limit or not top_title or top_title not in template_filled:
        return template_filled
    room = limit - (len(template_filled) - len(top_title)) - 1  # one for "…"
    if room < 10:
        return template_filled
    cut = top_title[: room + 1]
    cut = cut[: cut.rfind(" ")] if " " in cut else cut[:room]
    return template_filled.replace(top_title, cut.rstrip(" ,;:-–—") + "…", 1)
