"""Per-recipient placeholders: the issue is rendered once with these in it and each backend fills them.

The `%%NAME%%` form survives Jinja autoescaping, the MJML compilers and HTML attribute quoting unchanged,
and never occurs in ordinary prose.
"""

from __future__ import annotations

UNSUBSCRIBE_URL = "%%unsubscribe_url%%"
EMAIL = "%%email%%"
NAME = "%%name%%"

ALL = {"unsubscribe_url": UNSUBSCRIBE_URL, "email": EMAIL, "name": NAME}


def fill(body: str, values: dict[str, str]) -> str:
    """Replace each token with the recipient's value (missing values become empty)."""
    for key, token in ALL.items():
        if token in body:
            body = body.replace(token, values.get(key, ""))
    return body
