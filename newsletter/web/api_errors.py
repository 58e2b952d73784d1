"""The API's error: a status and a message, answered as `{"error": message}` (newsletter.web.api).

Its own module so that handlers living beside the pages they serve (web/conversation.py) can raise it without
importing the API module that routes them.
"""

from __future__ import annotations


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
