"""Editorial quality and speed on real article pages.

    python benchmarks/editorial.py [ARTICLES_DIR] [--archive N]

ARTICLES_DIR holds one folder per article with source.html (the page as served), expected.html (the reference
main text) and expected-metadata.json (whose `excerpt` is the publisher's own description); by default
../shared/corpus/articles next to the repository. Prints, per article and overall:

- extraction token F1 of our article text against expected.html, next to the naive baseline (all page text);
- quotes: how many, the share found verbatim in the text (must be 100%), how many are direct speech;
- summary length in words, and ROUGE-1/2 F1 of our summary against the publisher's excerpt, next to the
  first-two-sentences baseline (same extracted text, boilerplate removed, so the baseline is not handicapped).

Then the time to enrich a 30-story issue whose article pages come from a loopback HTTP server, fetch excluded.
ROUGE here is the plain n-gram overlap F1 (lowercased word tokens, no stemming), computed in this file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lxml import html as lxml_html  # noqa: E402

from newsletter.collect.article import extract  # noqa: E402
from newsletter.editorial.quotes import extract_quotes  # noqa: E402
from newsletter.editorial.summarize import extractive_summary, lead_sentences  # noqa: E402
from newsletter.text import appears_in, paragraphs, words  # noqa: E402

# The pages and feeds are served from loopback, which the fetcher refuses unless the operator allows it.
os.environ.setdefault("NEWSLETTER_FETCH_ALLOW", "127.0.0.1/32")


def _tokens(text: str) -> list[str]:
    return [w.lower() for w in words(text)]


def token_f1(candidate: str, reference: str) -> float:
    a, b = Counter(_tokens(candidate)), Counter(_tokens(reference))
    overlap = sum((a & b).values())
    if not overlap:
        return 0.0
    p, r = overlap / sum(a.values()), overlap / sum(b.values())
    return 2 * p * r / (p + r)


def rouge_n(candidate: str, reference: str, n: int) -> float:
    def grams(text: str) -> Counter:
        toks = _tokens(text)
        return Counter(tuple(toks[i : i + n]) for i in range(len(toks) - n + 1))

    a, b = grams(candidate), grams(reference)
    overlap = sum((a & b).values())
    if not overlap:
        return 0.0
    p, r = overlap / sum(a.values()), overlap / sum(b.values())
    return 2 * p * r / (p + r)


def _page_text(path: Path) -> str:
    root = lxml_html.fromstring(path.read_text(encoding="utf-8", errors="replace"))
    for bad in root.xpath("//script|//style|//noscript"):
        bad.drop_tree()
    return root.text_content()


def quality(articles: list[Path]) -> list[dict]:
    rows = []
    for folder in articles:
        meta = json.loads((folder / "expected-metadata.json").read_text(encoding="utf-8"))
        source = (folder / "source.html").read_bytes()
        # Decoded first: lxml guesses Latin-1 for bytes without a charset, which garbles every curly quote.
        reference_html = (folder / "expected.html").read_text(encoding="utf-8")
        reference = lxml_html.fromstring(reference_html).text_content()
        got = extract(source, None, "text/html")
        text, title, lang = got.text, got.title or meta.get("title") or "", got.language or meta.get("lang")
        summary = extractive_summary(text, title=title, max_sentences=3, max_words=80, language=lang)
        baseline = lead_sentences(text, 2, language=lang)
        quotes = extract_quotes(text, limit=3, summary=summary, language=lang)
        excerpt = meta.get("excerpt") or ""
        rows.append(
            {
                "name": folder.name,
                "f1": token_f1(text, reference),
                "f1_naive": token_f1(_page_text(folder / "source.html"), reference),
                "quotes": len(quotes),
                "verbatim": sum(appears_in(q.text, text) for q in quotes),
                "direct": sum(q.direct for q in quotes),
                "speakers": sum(bool(q.speaker) for q in quotes),
                "words": len(words(summary)),
                "lead_words": len(words(baseline)),
                "r1": rouge_n(summary, excerpt, 1),
                "r2": rouge_n(summary, excerpt, 2),
                "b1": rouge_n(baseline, excerpt, 1),
                "b2": rouge_n(baseline, excerpt, 2),
            }
        )
    return rows


def print_quality(rows: list[dict]) -> None:
    head = (
        f"{'article':<16}{'ext F1':>8}{'naive':>7}{'quotes':>7}{'verbatim':>9}{'direct':>7}{'named':>6}"
        f"{'words':>6}{'R-1':>7}{'R-2':>7}{'lead R-1':>9}{'lead R-2':>9}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['name']:<16}{r['f1']:>8.3f}{r['f1_naive']:>7.3f}{r['quotes']:>7}"
            f"{r['verbatim'] / max(r['quotes'], 1):>9.0%}{r['direct']:>7}{r['speakers']:>6}{r['words']:>6}"
            f"{r['r1']:>7.3f}{r['r2']:>7.3f}{r['b1']:>9.3f}{r['b2']:>9.3f}"
        )
    print("-" * len(head))
    mean = statistics.fmean
    quotes = sum(r["quotes"] for r in rows)
    print(
        f"{'overall':<16}{mean(r['f1'] for r in rows):>8.3f}{mean(r['f1_naive'] for r in rows):>7.3f}"
        f"{quotes:>7}{sum(r['verbatim'] for r in rows) / max(quotes, 1):>9.0%}"
        f"{sum(r['direct'] for r in rows):>7}{sum(r['speakers'] for r in rows):>6}"
        f"{mean(r['words'] for r in rows):>6.0f}{mean(r['r1'] for r in rows):>7.3f}"
        f"{mean(r['r2'] for r in rows):>7.3f}{mean(r['b1'] for r in rows):>9.3f}"
        f"{mean(r['b2'] for r in rows):>9.3f}"
    )
    print(
        f"summary: mean {mean(r['words'] for r in rows):.0f} words vs lead-2 "
        f"{mean(r['lead_words'] for r in rows):.0f}; wins on ROUGE-1 in "
        f"{sum(r['r1'] > r['b1'] for r in rows)}, ties {sum(r['r1'] == r['b1'] for r in rows)}, "
        f"losses {sum(r['r1'] < r['b1'] for r in rows)} of {len(rows)} articles"
    )


class _Pages(BaseHTTPRequestHandler):
    pages: dict[str, bytes] = {}

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        body = self.pages.get(self.path)
        self.send_response(200 if body else 404)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")


def clustering(articles: list[Path]) -> dict[str, str]:
    """One story once on passages of the articles: every third one re-told by another source (its first two
    sentences swapped, its headline taken from another sentence, its own link). Counts copies found, distinct
    passages wrongly merged, and time, next to the baseline of grouping by link and exact headline only."""
    from newsletter.editorial.cluster import group_same_story
    from newsletter.store.models import Item
    from newsletter.text import split_sentences

    passages = []
    for folder in articles:
        paras = paragraphs(extract((folder / "source.html").read_bytes(), None, "text/html").text)
        passages += [" ".join(paras[i : i + 3]) for i in range(0, max(len(paras) - 2, 1), 3)]
    items, copies = [], {}
    for k, text in enumerate(passages):
        sents = split_sentences(text)
        items.append(Item(id=k, title=" ".join(sents[0].split()[:12]), content_text=text,
                          link=f"https://a{k % 20}.example/{k}", source_id=k % 20, content_hash=f"a{k}"))
        if k % 3 == 0 and len(sents) > 2:
            retold = " ".join([sents[1], sents[0], *sents[2:]])
            copies[len(passages) + k] = k
            items.append(Item(id=len(passages) + k, title=" ".join(sents[1].split()[:12]), content_text=retold,
                              link=f"https://b.example/{k}", source_id=99, content_hash=f"b{k}"))
    started = time.perf_counter()
    groups = group_same_story(items)
    seconds = time.perf_counter() - started
    group_of = {it.id: g for g, group in enumerate(groups) for it in group}
    found = sum(group_of[c] == group_of[o] for c, o in copies.items())
    originals = [g for g in groups if sum(it.id < len(passages) for it in g) > 1]
    print(f"one story once: {len(items)} items, {len(copies)} re-told copies: {found} merged with their original, "
          f"{len(originals)} groups wrongly joining distinct passages, {seconds:.2f}s "
          f"(baseline by link and exact headline: 0 merged)")
    return {"benchmark": "editorial", "case": f"one story once: {len(copies)} re-told copies among {len(items)} items",
            "result": f"{found} found (baseline 0), {len(originals)} false merges", "seconds": f"{seconds:.2f}"}


def timing(articles: list[Path], stories: int = 30, archive: int = 1000) -> list:
    from sqlalchemy.orm import Session

    from newsletter.config import Newsletter
    from newsletter.editorial.enrich import enrich_issue
    from newsletter.store.db import ensure_newsletter, get_engine
    from newsletter.store.models import IssueItem, IssueRow, Item, Source

    _Pages.pages = {
        f"/story/{i}": (articles[i % len(articles)] / "source.html").read_bytes() for i in range(stories)
    }
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Pages)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"

    # The archive: passages of the same articles posing as older stories, so related reading has work to do.
    passages = []
    for folder in articles:
        got = extract((folder / "source.html").read_bytes(), None, "text/html")
        paras = paragraphs(got.text)
        passages += [" ".join(paras[i : i + 3]) for i in range(0, max(len(paras) - 2, 1), 2)]
    now = datetime(2026, 11, 23)
    with tempfile.TemporaryDirectory() as tmp:
        engine = get_engine(f"sqlite:///{tmp}/bench.db")
        with Session(engine) as session:
            feed = Source(url=f"{base}/feed", name="Loopback News")
            old = Source(url=f"{base}/old", name="Archive")
            session.add_all([feed, old])
            session.flush()
            for i in range(archive):
                text = passages[i % len(passages)]
                title = " ".join(text.split()[:10])
                session.add(
                    Item(
                        source_id=old.id,
                        guid=f"old-{i}",
                        link=f"{base}/old/{i}",
                        title=title,
                        content_text=text,
                        content_hash=hashlib.sha256(f"{i}{text}".encode()).hexdigest(),
                        published_at=now - timedelta(days=30 + i % 300),
                    )
                )
            items = []
            for i in range(stories):
                meta = json.loads((articles[i % len(articles)] / "expected-metadata.json").read_text())
                item = Item(
                    source_id=feed.id,
                    guid=f"s-{i}",
                    link=f"{base}/story/{i}",
                    title=meta["title"],
                    content_text="Comments",
                    content_hash=f"s{i}",
                    published_at=now - timedelta(days=1),
                )
                session.add(item)
                items.append(item)
            nl_row = ensure_newsletter(session, "bench", "Bench")
            issue = IssueRow(
                newsletter_id=nl_row.id,
                number=1,
                subject="Bench",
                window_start=now - timedelta(7),
                window_end=now,
            )
            session.add(issue)
            session.flush()
            for pos, item in enumerate(items, 1):
                session.add(
                    IssueItem(
                        issue_id=issue.id,
                        item_id=item.id,
                        position=pos,
                        title=item.title,
                        url=item.link,
                        source_name="Loopback News",
                        summary="Comments",
                    )
                )
            session.commit()
            session.refresh(issue)
            nl = Newsletter.model_validate(
                {
                    "name": "Bench",
                    "slug": "bench",
                    "from_address": "b@example.com",
                    "sources": [{"url": feed.url}],
                }
            )
            runs = []
            for label in ("first build (pages fetched)", "second build (articles cached)"):
                report = enrich_issue(session, issue, nl)
                session.commit()
                runs.append((label, report))
    server.shutdown()
    print()
    print(
        f"Enriching a {stories}-story issue (archive of {archive + stories} items, pages on loopback HTTP):"
    )
    head = f"{'run':<32}{'total s':>9}{'fetch s':>9}{'per story ms':>14}   stages (s)"
    print(head)
    print("-" * (len(head) + 40))
    for label, r in runs:
        per_item = (r.seconds - r.fetch_seconds) / max(r.items, 1) * 1000
        stages = ", ".join(f"{k} {v:.2f}" for k, v in r.stage_seconds.items())
        print(f"{label:<32}{r.seconds:>9.2f}{r.fetch_seconds:>9.2f}{per_item:>14.1f}   {stages}")
    print("(per story = enrichment time without waiting for the network, divided by the number of stories;")
    print(" the 'articles' stage of the first build includes trafilatura extraction of every page)")
    last = runs[0][1]
    print(f"first build: {last.summary_line()}")
    print()
    return runs


def main() -> list[dict[str, str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("articles", nargs="?", default=str(REPO.parent / "shared" / "corpus" / "articles"))
    parser.add_argument("--archive", type=int, default=1000, help="archive items for related reading")
    parser.add_argument("--stories", type=int, default=30)
    args = parser.parse_args()
    folder = Path(args.articles)
    articles = sorted(p for p in folder.iterdir() if (p / "source.html").exists()) if folder.is_dir() else []
    if not articles:
        print(f"{folder}: no article folders (each needs source.html, expected.html, expected-metadata.json)")
        return [{"benchmark": "editorial", "case": f"skipped: no articles in {folder}"}]
    rows = quality(articles)
    print_quality(rows)
    print()
    cluster_row = clustering(articles)
    runs = timing(articles, args.stories, args.archive)
    mean = statistics.fmean
    quotes = sum(r["quotes"] for r in rows)
    n = len(rows)
    first, cached = runs[0][1], runs[1][1]
    return [
        {"benchmark": "editorial", "case": f"article text token F1, {n} pages: trafilatura vs all page text",
         "result": f"{mean(r['f1'] for r in rows):.3f} vs {mean(r['f1_naive'] for r in rows):.3f}"},
        {"benchmark": "editorial", "case": f"key quotes found verbatim in the text ({quotes} quotes)",
         "result": f"{sum(r['verbatim'] for r in rows) / max(quotes, 1):.0%}, "
                   f"{sum(r['direct'] for r in rows)} direct speech"},
        {"benchmark": "editorial", "case": "summary ROUGE-1 / ROUGE-2 vs publisher excerpt: ours vs lead-2",
         "result": f"{mean(r['r1'] for r in rows):.3f}/{mean(r['r2'] for r in rows):.3f} vs "
                   f"{mean(r['b1'] for r in rows):.3f}/{mean(r['b2'] for r in rows):.3f}"},
        cluster_row,
        {"benchmark": "editorial", "case": f"enrich {first.items} stories, pages fetched (fetch excluded)",
         "seconds": f"{first.seconds - first.fetch_seconds:.2f}",
         "result": f"{(first.seconds - first.fetch_seconds) / max(first.items, 1) * 1000:.0f} ms/story"},
        {"benchmark": "editorial", "case": f"enrich {cached.items} stories again, articles cached",
         "seconds": f"{cached.seconds:.2f}",
         "result": f"{cached.seconds / max(cached.items, 1) * 1000:.0f} ms/story"},
    ]


if __name__ == "__main__":
    from benchmarks.table import print_table

    print_table(main())
