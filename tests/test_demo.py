"""`newsletter demo`: the README's first command, offline, twice in a row."""

from __future__ import annotations

import email
import re
from email import policy
from importlib import resources
from pathlib import Path


def sample_titles() -> list[str]:
    titles = []
    for feed in resources.files("newsletter.demo").joinpath("feeds").iterdir():
        text = feed.read_text(encoding="utf-8")
        items = re.findall(r"<(?:item|entry)>.*?<title[^>]*>(.*?)</title>", text, re.S)
        titles += [t.replace("&amp;", "&") for t in items]
    return titles


def test_demo_delivers_a_digest_of_the_sample_feeds_to_the_outbox(workdir, cli) -> None:
    for _ in range(2):  # running it twice works and gives the same result
        out = cli("demo", "--dir", str(workdir / "demo")).output
        assert "18 new items from 3 sources; 0 failed" in out
        paths = re.findall(r"(/\S+\.eml)", out)
        assert len(paths) == 3
    titles = sample_titles()
    assert len(titles) == 18
    for path in paths:
        msg = email.message_from_bytes(Path(path).read_bytes(), policy=policy.default)
        assert msg.get_content_type() == "multipart/alternative"
        text, html = msg.get_payload()
        assert text.get_content_type() == "text/plain" and html.get_content_type() == "text/html"
        body = html.get_content()
        shown = [t for t in titles if t.replace("&", "&amp;") in body]
        assert len(shown) >= 8, shown  # the issue holds up to 10 stories from the samples
        plain = " ".join(text.get_content().split())  # the text part wraps long titles
        assert all(t in plain for t in shown)
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    preview = re.search(r"HTML preview: (\S+)", out).group(1)
    assert "<html" in Path(preview).read_text(encoding="utf-8")
