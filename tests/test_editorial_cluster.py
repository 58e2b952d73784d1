"""One story once (clustering) and related reading from the archive."""

from __future__ import annotations

from newsletter.editorial.cluster import canonical_url, group_same_story
from newsletter.editorial.related import Doc, RelatedIndex, related_entries
from newsletter.store.models import Item

ATLAS = (
    "Lumen Labs released Atlas-7, an open-weight language model with seven billion parameters, on Tuesday. "
    "The company says the model matches much larger systems on coding and reasoning benchmarks and can run "
    "on a single laptop graphics card. The weights are published under the Apache licence."
)
ATLAS_OTHER_OUTLET = (
    "Lumen Labs has published the weights of Atlas-7, its new seven billion parameter language model, under "
    "the Apache licence. The open-weight model runs on a single laptop graphics card, and Lumen Labs says it "
    "rivals far larger systems on reasoning and coding benchmarks."
)


def _item(i: int, title: str, text: str, link: str, source: int) -> Item:
    return Item(id=i, title=title, content_text=text, link=link, source_id=source, content_hash=f"h{i}")


def test_two_copies_of_one_story_become_one_group_first_ranked_first() -> None:
    items = [
        _item(1, "Lumen Labs releases open-weight model Atlas-7", ATLAS, "https://lumen.example/blog/atlas-7", 1),
        _item(
            2,
            "Saltby votes to rebuild harbour bridge in timber",
            "The council voted on Tuesday to rebuild the old harbour bridge in timber.",
            "https://courier.example/bridge",
            2,
        ),
        # Hacker News links the same page, with tracking parameters and a trailing slash.
        _item(
            3,
            "Atlas-7 (lumen.example)",
            "Comments",
            "http://www.lumen.example/blog/atlas-7/?utm_source=hn",
            3,
        ),
        # Another outlet on the same announcement, in its own words.
        _item(
            4,
            "Atlas-7: Lumen Labs publishes weights of its seven billion parameter language model",
            ATLAS_OTHER_OUTLET,
            "https://technews.example/2026/atlas",
            4,
        ),
    ]
    groups = group_same_story(items)
    assert [[it.id for it in g] for g in groups] == [[1, 3, 4], [2]]


def test_different_stories_and_same_source_follow_ups_stay_apart() -> None:
    items = [
        _item(1, "Lumen Labs releases open-weight model Atlas-7", ATLAS, "https://lumen.example/a", 1),
        _item(2, "Lumen Labs releases open-weight model Atlas-7 update", ATLAS, "https://lumen.example/b", 1),
        _item(
            3,
            "City council approves new cycling lanes",
            "The council approved twelve kilometres of new cycling lanes on Monday.",
            "https://city.example/lanes",
            2,
        ),
    ]
    items[1].content_hash = "different"
    groups = group_same_story(items)
    assert [[it.id for it in g] for g in groups] == [[1], [2], [3]]


def test_canonical_url_ignores_tracking_and_www() -> None:
    assert canonical_url("https://www.site.example/a/b/?utm_medium=x&id=3#top") == "site.example/a/b?id=3"
    assert canonical_url("http://site.example/a/b?id=3") == "site.example/a/b?id=3"


ARCHIVE = [
    Doc(
        1,
        "Lumen Labs releases open-weight model Atlas-7",
        "https://lumen.example/atlas",
        "Lumen",
        ATLAS,
        "h1",
    ),
    Doc(
        2,
        "Atlas-7: Lumen Labs publishes weights of its seven billion parameter language model",
        "https://technews.example/atlas",
        "Tech News",
        ATLAS_OTHER_OUTLET,
        "h2",
    ),
    Doc(
        3,
        "Regulators weigh rules for open-weight language models",
        "https://policy.example/open-models",
        "Policy Wire",
        "European regulators are weighing new rules for open-weight language models after several releases. "
        "Officials want model makers to publish evaluations of reasoning and safety benchmarks.",
        "h3",
    ),
    Doc(
        4,
        "Small language models close the gap on coding benchmarks",
        "https://bench.example/small",
        "Bench Weekly",
        "A new study finds that small language models with under ten billion parameters now "
        "score close to much larger systems on coding benchmarks, and run on a laptop graphics card.",
        "h4",
    ),
    Doc(
        5,
        "Lumen Labs raises funding to train larger open models",
        "https://money.example/lumen",
        "Money Daily",
        "Lumen Labs, the maker of open-weight language models, raised new funding to train "
        "larger models and expand its research team.",
        "h5",
    ),
    Doc(
        6,
        "Saltby wins the county football cup",
        "https://sport.example/saltby",
        "Sport Now",
        "Saltby beat Northam two goals to one in the county cup final on Saturday afternoon.",
        "h6",
    ),
    Doc(
        7,
        "How to bake sourdough bread at home",
        "https://food.example/bread",
        "Food Life",
        "A starter, flour, water and patience are all you need to bake sourdough bread in your own kitchen.",
        "h7",
    ),
]


def test_related_excludes_the_item_itself_and_its_copies() -> None:
    index = RelatedIndex(ARCHIVE)
    related, same = index.related(ARCHIVE[0], limit=5)
    ids = [d.id for d in related]
    assert 1 not in ids  # the story itself
    assert 2 not in ids and [d.id for d in same] == [2]  # another outlet's copy is not "related"
    assert set(ids) == {3, 4, 5}  # the football and bread stories are not related to a model release
    assert len(index.related(ARCHIVE[0], limit=2)[0]) == 2


def test_related_entries_have_title_url_source_and_one_line_blurb() -> None:
    index = RelatedIndex(ARCHIVE)
    related, _ = index.related(ARCHIVE[0], limit=3)
    entries = related_entries(related)
    assert entries and set(entries[0]) == {"title", "url", "source", "blurb"}
    for entry in entries:
        assert entry["blurb"] and "\n" not in entry["blurb"] and len(entry["blurb"]) <= 140
    by_url = {e["url"]: e for e in entries}
    assert by_url["https://money.example/lumen"]["source"] == "Money Daily"
    assert by_url["https://money.example/lumen"]["blurb"].startswith("Lumen Labs, the maker of open-weight")


def test_story_outside_the_archive_and_empty_archive() -> None:
    outside = Doc(99, "Open-weight language models", "https://new.example/x", "New", "Open-weight models.", "")
    related, _ = RelatedIndex(ARCHIVE).related(outside, limit=5)
    assert related and all(d.id != 99 for d in related)
    assert RelatedIndex([]).related(outside, limit=5) == ([], [])


def test_similar_stories_weeks_apart_are_not_one_story() -> None:
    from datetime import datetime, timedelta

    first = _item(1, "Lumen Labs releases open-weight model Atlas-7", ATLAS, "https://lumen.example/a", 1)
    later = _item(
        2,
        "Atlas-7: Lumen Labs publishes weights of its seven billion parameter language model",
        ATLAS_OTHER_OUTLET,
        "https://technews.example/b",
        2,
    )
    first.published_at = datetime(2026, 11, 1)
    later.published_at = first.published_at + timedelta(days=1)
    assert len(group_same_story([first, later])) == 1
    later.published_at = first.published_at + timedelta(days=20)
    assert len(group_same_story([first, later])) == 2


def test_related_lists_one_copy_of_another_story() -> None:
    related, _ = RelatedIndex(ARCHIVE).related(ARCHIVE[2], limit=5)  # the regulators story
    ids = [d.id for d in related]
    assert 1 in ids or 2 in ids
    assert not (1 in ids and 2 in ids)  # the Atlas-7 release and another outlet's copy of it: one is enough
