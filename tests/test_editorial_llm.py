"""The model client's pure parts: endpoint URLs, prompt filling, cleaning a reply into a summary."""

from __future__ import annotations

from newsletter.config import Summarizer
from newsletter.editorial.llm import Job, chat_url, clean_answer, render_prompt


def test_endpoint_as_base_or_full_url() -> None:
    assert chat_url("http://localhost:11434/v1") == "http://localhost:11434/v1/chat/completions"
    assert chat_url("http://localhost:8080/v1/chat/completions/") == "http://localhost:8080/v1/chat/completions"


def test_prompt_fills_known_names_and_leaves_other_braces() -> None:
    s = Summarizer(
        endpoint="http://localhost:1/v1", model="m", prompt="In {sentences} sentences ({json: ok}): {title}\n{text}"
    )
    prompt = render_prompt(s, Job(title="Bridge vote", text="word " * 5000, sentences=2, words=50))
    assert prompt.startswith("In 2 sentences ({json: ok}): Bridge vote\n")
    assert prompt.count("word") == 1500  # long articles are cut before they reach the model


def test_reply_cleaning_keeps_whole_sentences_within_budget() -> None:
    reply = (
        "<think>The user wants...</think>\n**Summary:** "
        "The council voted to rebuild the bridge. Work starts in March. It ends in September."
    )
    assert clean_answer(reply, max_words=80) == (
        "The council voted to rebuild the bridge. Work starts in March. It ends in September."
    )
    assert clean_answer(reply, max_words=12) == "The council voted to rebuild the bridge. Work starts in March."
    assert clean_answer("One very long sentence that goes well past the budget given.", max_words=3) == ""
