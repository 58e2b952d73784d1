"""A render variant: what differs between readers' copies of one issue beyond the per-recipient tokens.

Readers choose an email format (HTML with a text part, or text only) and may turn sections off; everyone who
chose the same is one variant and gets the same bytes, so an issue is rendered once per variant its audience
actually holds, never once per reader. The key is what the ledger stores on subscriptions and batches: '' for
the default (HTML, every section), else a compact JSON pair [format, sorted sections off].
"""

from __future__ import annotations

import json
from dataclasses import dataclass

FORMATS = ("html", "text")


@dataclass(frozen=True)
class Variant:
    format: str = "html"
    sections_off: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return variant_key(self.format, self.sections_off)

    @property
    def default(self) -> bool:
        return self.key == ""


DEFAULT = Variant()


def variant_key(format: str | None, sections_off: object = ()) -> str:
    fmt = "text" if format == "text" else "html"
    off = sorted({s for s in (sections_off or ()) if isinstance(s, str) and s})  # type: ignore[attr-defined]
    if fmt == "html" and not off:
        return ""
    return json.dumps([fmt, off], ensure_ascii=False, separators=(",", ":"))


def variant_of(key: str | None) -> Variant:
    """The variant a stored key names; a key that does not parse is the default (everything, HTML)."""
    if not key:
        return DEFAULT
    try:
        fmt, off = json.loads(key)
    except (ValueError, TypeError):
        return DEFAULT
    if fmt not in FORMATS or not isinstance(off, list):
        return DEFAULT
    return Variant(fmt, tuple(sorted(s for s in off if isinstance(s, str))))
