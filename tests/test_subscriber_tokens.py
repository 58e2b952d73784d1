"""Signed tokens: what a forger or a careless copy-paste can and cannot do."""

from __future__ import annotations

import time

import pytest

from newsletter.subscribers.tokens import (
    CONFIRM,
    UNSUBSCRIBE,
    InvalidToken,
    Signer,
    confirm_url,
    read_token,
    unsubscribe_url,
)

SECRET = "test-secret-key"


def test_unsubscribe_url_round_trips() -> None:
    url = unsubscribe_url("https://news.example.com/", SECRET, 42, "ai-weekly")
    assert url.startswith("https://news.example.com/u/")
    data = read_token(SECRET, url.rsplit("/", 1)[1], UNSUBSCRIBE)
    assert (data.subscriber_id, data.newsletter_slug, data.expires_at) == (42, "ai-weekly", None)


def test_every_altered_character_is_rejected() -> None:
    token = Signer(SECRET).make(UNSUBSCRIBE, 42, "ai-weekly")
    for i, ch in enumerate(token):
        if ch == ".":
            continue
        altered = token[:i] + ("A" if ch != "A" else "B") + token[i + 1 :]
        with pytest.raises(InvalidToken):
            read_token(SECRET, altered, UNSUBSCRIBE)


def test_other_secret_wrong_purpose_and_garbage_are_rejected() -> None:
    token = Signer(SECRET).make(UNSUBSCRIBE, 42, "ai-weekly")
    with pytest.raises(InvalidToken):
        read_token("another-secret", token, UNSUBSCRIBE)
    with pytest.raises(InvalidToken, match="purpose"):
        read_token(SECRET, token, CONFIRM)
    for junk in ("", ".", "abc", "a.b.c", "!!!.???"):
        with pytest.raises(InvalidToken):
            read_token(SECRET, junk, UNSUBSCRIBE)


def test_confirmation_links_expire() -> None:
    url = confirm_url("https://x.example", SECRET, 7, "ai-weekly", ttl=60)
    token = url.rsplit("/", 1)[1]
    assert read_token(SECRET, token, CONFIRM).subscriber_id == 7
    with pytest.raises(InvalidToken, match="expired"):
        read_token(SECRET, token, CONFIRM, now=time.time() + 61)


def test_batch_signing_gives_the_same_links() -> None:
    signer = Signer(SECRET)
    ids = [1, 42, 10**12]
    assert signer.unsubscribe_urls("https://n.example/", ids, "ai-weekly") == [
        unsubscribe_url("https://n.example", SECRET, i, "ai-weekly") for i in ids
    ]
