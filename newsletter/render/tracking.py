"""Tracked links and the open pixel, put into an issue's one render (only when its schedule file turns them on).

With `tracking.clicks`, every story, related and "also covered by" link of the HTML and text parts becomes
`BASE/r/LINK/%%recipient%%`: LINK is the issue, the story's position and the exact destination, signed (HMAC-SHA256
under a key derived from the installation's secret), so /r/ redirects only where the issue itself pointed (no open
redirect) and needs no cookie or database row to do it. `%%recipient%%` is a per-recipient token (like the
unsubscribe link): the render stays one per issue and each backend fills in the reader's value, their subscriber
id and a MAC over it; the reader's address is never in a URL. What is stored is `recipient_hash`, another keyed
hash of the id, which `subscribers forget` can recompute to remove a reader's events.

With `tracking.opens`, a 1x1 image `BASE/o/ISSUE/%%recipient%%.gif` goes at the end of the HTML body.

The rewrite runs on the finished render (after newsletter.render.tokens.finish), on the links the issue's own data
names: templates need no change, and a link written in feed text or the editor's note is left as it is.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import re
from dataclasses import dataclass
from typing import Any

from newsletter.render import tokens

_MAC_BYTES = 16  # as the unsubscribe links: 128 bits
_RECIPIENT_MAC_BYTES = 9  # 72 bits per reader value: forging one still needs ~2^72 tries, for one fake click


class InvalidLink(ValueError):
    """A tracked link or pixel token that is malformed, altered or signed with another key."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Link:
    issue_id: int
    story: int  # the story's position in the issue (1 = first); 0 for none
    url: str


class TrackSigner:
    """Signs and reads tracked links, pixel tokens and reader values under one key (Signer.subkey("tracking"))."""

    def __init__(self, key: bytes) -> None:
        if not key:
            raise ValueError("a key is required to sign tracked links")
        self._mac = hmac.new(key, digestmod=hashlib.sha256)

    def _sig(self, purpose: bytes, payload: bytes, size: int = _MAC_BYTES) -> bytes:
        mac = self._mac.copy()
        mac.update(purpose + b"\x00" + payload)
        return mac.digest()[:size]

    # -- links ----------------------------------------------------------------------------------------------
    def link_token(self, issue_id: int, story: int, url: str) -> str:
        payload = f"{int(issue_id)}.{int(story)}.{url}".encode()
        return _b64(payload) + "." + _b64(self._sig(b"r", payload))

    def read_link(self, token: str) -> Link:
        payload = self._checked(token, b"r")
        try:
            issue, story, url = payload.decode("utf-8").split(".", 2)
            return Link(int(issue), int(story), url)
        except ValueError:
            raise InvalidLink("malformed link") from None

    def pixel_token(self, issue_id: int) -> str:
        payload = str(int(issue_id)).encode()
        return _b64(payload) + "." + _b64(self._sig(b"o", payload))

    def read_pixel(self, token: str) -> int:
        try:
            return int(self._checked(token, b"o").decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            raise InvalidLink("malformed pixel token") from None

    def _checked(self, token: str, purpose: bytes) -> bytes:
        try:
            payload_part, sig_part = token.split(".")
            payload, sig = _unb64(payload_part), _unb64(sig_part)
        except (ValueError, TypeError):
            raise InvalidLink("malformed token") from None
        if not hmac.compare_digest(sig, self._sig(purpose, payload)):
            raise InvalidLink("bad signature")
        return payload

    # -- readers --------------------------------------------------------------------------------------------
    def recipient_value(self, subscriber_id: int) -> str:
        """What fills %%recipient%% for one reader: their id (base 36) and a MAC over it. Not their address."""
        sid = _base36(int(subscriber_id))
        return sid + "-" + _b64(self._sig(b"t", sid.encode(), _RECIPIENT_MAC_BYTES))

    def read_recipient(self, value: str) -> int | None:
        """The subscriber id a reader value names, or None when it is missing or forged."""
        sid, _, sig = value.partition("-")
        if not sid or not sig or len(sid) > 13 or not sid.isalnum() or not sid.isascii():
            return None
        try:
            ok = hmac.compare_digest(_unb64(sig), self._sig(b"t", sid.encode(), _RECIPIENT_MAC_BYTES))
        except (ValueError, TypeError):
            return None
        return int(sid, 36) if ok else None

    def recipient_hash(self, subscriber_id: int) -> str:
        """How a reader is stored in the events: 128 bits of keyed hash, the same for every issue."""
        return self._sig(b"h", str(int(subscriber_id)).encode()).hex()


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


# -- the rewrite --------------------------------------------------------------------------------------------

def issue_links(items: list[dict[str, Any]]) -> dict[str, int]:
    """Each tracked destination of an issue (its JSON form's items) and the story it belongs to (first wins)."""
    out: dict[str, int] = {}
    for position, item in enumerate(items, start=1):
        urls = [item.get("url")]
        urls += [r.get("url") for r in item.get("related") or []]
        urls += [r.get("url") for r in item.get("also_covered_by") or []]
        for url in urls:
            if isinstance(url, str) and url.startswith(("http://", "https://")):
                out.setdefault(url, position)
    return out


_HREF = re.compile(r'href="([^"]*)"')


def apply(html_part: str, text_part: str, *, signer: TrackSigner, base_url: str, issue_id: int,
          links: dict[str, int], clicks: bool, opens: bool) -> tuple[str, str]:
    """The HTML and text parts with tracked links (`clicks`) and the open pixel (`opens`)."""
    base = base_url.rstrip("/")
    if clicks and links:
        tracked = {url: f"{base}/r/{signer.link_token(issue_id, story, url)}/{tokens.RECIPIENT}"
                   for url, story in links.items()}

        def swap(match: re.Match[str]) -> str:
            url = html.unescape(match.group(1))
            return f'href="{html.escape(tracked[url])}"' if url in tracked else match.group(0)

        html_part = _HREF.sub(swap, html_part)
        # The text part: a URL standing alone (the reference list "[n] URL", or a template's own layout).
        alone = re.compile(r"(?<!\S)(" + "|".join(map(re.escape, sorted(tracked, key=len, reverse=True)))
                           + r")(?=\s|$)", re.M)
        text_part = alone.sub(lambda m: tracked[m.group(1)], text_part)
    if opens:
        pixel = (f'<img src="{base}/o/{signer.pixel_token(issue_id)}/{tokens.RECIPIENT}.gif" width="1" '
                 'height="1" alt="" style="display:block;width:1px;height:1px;border:0;overflow:hidden" />')
        at = html_part.rfind("</body>")
        html_part = html_part[:at] + pixel + html_part[at:] if at >= 0 else html_part + pixel
    return html_part, text_part
