"""Access logs without secrets: the signed tokens in unsubscribe and confirmation links are cut out.

Anyone holding such a link can act for its subscriber, and access logs are read and kept by more people and
for longer than the database.
"""

from __future__ import annotations

import copy
import logging
import re
from typing import Any

_TOKEN_PATH = re.compile(r"(/(?:u|confirm)/)[^/?#\s\"]+")


def redact(text: str) -> str:
    # Most lines carry no token link: a substring test is a tenth of the regex (every request is logged).
    if "/u/" not in text and "/confirm/" not in text:
        return text
    return _TOKEN_PATH.sub(r"\1[token]", text)


class RedactTokens(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        # uvicorn's access record carries the path in its args (client, method, path, version, status).
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's own logging setup with the token filter on the access log."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact_tokens"] = {"()": RedactTokens}
    config["handlers"]["access"]["filters"] = ["redact_tokens"]
    return config
