"""Model summaries from any OpenAI-compatible chat endpoint (Ollama, vLLM, llama.cpp server, hosted APIs).

Each request has a hard deadline (the `[summarizer] timeout`). When the endpoint cannot be reached, or times
out twice, the remaining stories are not sent to it: no issue should wait 20 s per story for a dead server.
The caller falls back to the extractive summary and records why.
"""

from __future__ import annotations

import asyncio
import os
import re
from dataclasses import dataclass

import httpx

from newsletter.config import Summarizer
from newsletter.text import normalize_ws, split_sentences, word_count

MAX_INPUT_WORDS = 1500  # enough for the point of a news story; keeps small local models fast
CONCURRENCY = 4
_THINK = re.compile(r"<think>.*?</think>", re.S | re.I)
_LABEL = re.compile(r"^\s*(?:\*\*)?(?:summary|tl;dr)(?:\*\*)?\s*:\s*", re.I)


@dataclass
class Job:
    title: str
    text: str
    sentences: int
    words: int


@dataclass
class Answer:
    summary: str | None  # None: use the fallback
    error: str | None = None


class ModelError(Exception):
    pass


def chat_url(endpoint: str) -> str:
    """Accept a base URL ("http://localhost:11434/v1") or the full chat completions URL."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/chat/completions") else endpoint + "/chat/completions"


def render_prompt(summarizer: Summarizer, job: Job) -> str:
    text = " ".join(job.text.split()[:MAX_INPUT_WORDS])
    values = {"title": job.title, "text": text, "sentences": job.sentences, "words": job.words}
    # format_map with a plain dict would raise on a stray "{" in a user's template; replace known names only.
    prompt = summarizer.prompt
    for key, value in values.items():
        prompt = prompt.replace("{" + key + "}", str(value))
    return prompt


def clean_answer(content: str, max_words: int, language: str | None = "en") -> str:
    """The model's reply as a summary: reasoning blocks, labels and markup removed, whole sentences only."""
    content = _THINK.sub("", content)
    content = _LABEL.sub("", content.strip())
    content = normalize_ws(content.replace("**", "").strip('"“” '))
    if word_count(content) <= max_words:
        return content
    out = ""
    for sent in split_sentences(content, language):
        candidate = f"{out} {sent}".strip()
        if word_count(candidate) > max_words:
            break
        out = candidate
    return out


async def _ask(client: httpx.AsyncClient, summarizer: Summarizer, job: Job, headers: dict[str, str]) -> str:
    body = {
        "model": summarizer.model,
        "messages": [{"role": "user", "content": render_prompt(summarizer, job)}],
        "temperature": 0.2,
        "stream": False,
    }
    response = await client.post(chat_url(summarizer.endpoint), json=body, headers=headers)
    if response.status_code >= 400:
        raise ModelError(f"HTTP {response.status_code}")
    try:
        content = response.json()["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise ModelError("unexpected reply (not an OpenAI chat completion)") from None
    if not isinstance(content, str) or not content.strip():
        raise ModelError("empty reply")
    return content


async def summarize_all(summarizer: Summarizer, jobs: list[Job], language: str | None = "en") -> list[Answer]:
    headers = {}
    if summarizer.api_key_env:
        key = os.environ.get(summarizer.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
    answers: list[Answer | None] = [None] * len(jobs)
    down: str | None = None  # why the endpoint is not asked any more
    timeouts = 0
    sem = asyncio.Semaphore(CONCURRENCY)
    timeout = summarizer.timeout

    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0))) as client:

        async def one(index: int, job: Job) -> None:
            nonlocal down, timeouts
            async with sem:
                if down:
                    answers[index] = Answer(None, down)
                    return
                try:
                    content = await asyncio.wait_for(_ask(client, summarizer, job, headers), timeout)
                except (TimeoutError, httpx.TimeoutException):
                    timeouts += 1
                    error = f"no answer within {timeout:g}s"
                    if timeouts >= 2:
                        down = f"skipped: endpoint too slow ({error})"
                    answers[index] = Answer(None, error)
                    return
                except httpx.HTTPError as exc:
                    error = f"cannot reach {summarizer.endpoint}: {type(exc).__name__}"
                    down = error
                    answers[index] = Answer(None, error)
                    return
                except ModelError as exc:
                    answers[index] = Answer(None, str(exc))
                    return
                summary = clean_answer(content, job.words, language)
                answers[index] = Answer(summary or None, None if summary else "reply had no usable sentence")

        await asyncio.gather(*(one(i, job) for i, job in enumerate(jobs)))
    return [a or Answer(None, "not asked") for a in answers]
