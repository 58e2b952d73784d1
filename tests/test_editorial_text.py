"""Sentence splitting, boilerplate removal and extractive summaries."""

from __future__ import annotations

from pathlib import Path

from newsletter import text
from newsletter.editorial.summarize import extractive_summary, lead_sentences
from newsletter.text import appears_in, paragraphs, sentences, split_sentences, word_count

STORY = (Path(__file__).parent / "fixtures" / "editorial" / "wellsby.txt").read_text(encoding="utf-8")


def test_sentences_survive_abbreviations_and_decimals() -> None:
    text = "Mr. Okafor paid 1.2 billion dollars in the U.S. last year. Dr. Lee disagreed. She left."
    parts = split_sentences(text)
    assert parts == [
        "Mr. Okafor paid 1.2 billion dollars in the U.S. last year.",
        "Dr. Lee disagreed.",
        "She left.",
    ]


def test_boilerplate_lines_are_dropped() -> None:
    kept = paragraphs(STORY)
    text = " ".join(kept)
    for furniture in ("Image caption", "Getty Images", "Advertisement", "Share this", "By Tom Baker"):
        assert furniture not in text
    assert any(p.startswith("The plan, which costs") for p in kept)


def test_summary_is_whole_sentences_within_budget() -> None:
    summary = extractive_summary(
        STORY, title="Wellsby will close its coal plant", max_sentences=3, max_words=60
    )
    assert summary
    assert word_count(summary) <= 60
    for sent in split_sentences(summary):
        assert sent in [s.text for s in sentences(STORY)] or appears_in(sent, STORY)
    assert summary.startswith("The city of Wellsby approved")  # dateline gone, lede kept
    assert "Getty" not in summary and "Advertisement" not in summary
    assert not summary.startswith("But")


def test_summary_respects_sentence_count_and_never_cuts() -> None:
    one = extractive_summary(STORY, max_sentences=1, max_words=80)
    assert len(split_sentences(one)) == 1 and one.endswith(".")
    # A budget smaller than any sentence gives nothing rather than half a sentence.
    assert extractive_summary(STORY, max_sentences=3, max_words=5) == ""


def test_summary_skips_dangling_openers_that_lead_would_keep() -> None:
    text = (
        "The museum reopened on Friday after a two-year renovation costing 40 million euros.\n"
        "But the new wing remains closed to visitors until the summer.\n"
        "The renovation added climate control, a new roof and a cafe overlooking the river.\n"
    )
    summary = extractive_summary(text, title="Museum reopens after renovation", max_sentences=2, max_words=80)
    assert "But the new wing" not in summary
    assert "But the new wing" in lead_sentences(text, 2)


def test_quote_normalisation_matches_curly_and_straight() -> None:
    source = "She said “it’s  a\nbig day” for the town."
    assert appears_in('She said "it\'s a big day" for the town.', source)
    assert not appears_in("She said it is a big day", source)


def test_kept_sentence_splits_are_taken_only_for_their_own_text_version_and_language() -> None:
    article = ("Dr. Ana Ruiz arrived at 3.30 p.m. on Monday. She met the mayor. They spoke for an hour.\n\n"
               "The plan costs 4.5 million euros. Work starts in May. It ends in 2028.")
    kept = text.sentence_splits(article, "en")
    fresh = [s.text for s in text.sentences(article, "en")]
    other = "The bridge opens in June. Tolls are gone.\n\nA second bridge is planned. It opens later."
    assert not text.remember_splits(other, "en", kept)  # another text: its sentences are not in it
    assert not text.remember_splits(article, "de", kept)
    assert not text.remember_splits(article, "en", {**kept, "version": "pysbd 0.0.1, rules 1"})
    assert not text.remember_splits(article, "en", {**kept, "splits": kept["splits"][:1]})
    assert not text.remember_splits(article, "en", None)
    text._split_sentences.cache_clear()
    text._sentences.cache_clear()
    assert text.remember_splits(article, "en", kept)
    assert [s.text for s in text.sentences(article, "en")] == fresh


def test_a_summary_is_split_into_the_sentences_it_was_made_of_without_pysbd(monkeypatch) -> None:  # noqa: ANN001
    article = ("The council approved the bridge plan on Monday after a long debate. The vote was seven to two. "
               "Dr. Ana Ruiz, who led the study, said the costs were checked twice.\n\n"
               "Work starts in May and should end in 2028. Tolls will be dropped once it opens.")
    summary = extractive_summary(article, max_sentences=2, max_words=40)
    picked = [s for s in split_sentences(article.split("\n\n")[0]) + split_sentences(article.split("\n\n")[1])
              if s in summary]
    text._split_sentences.cache_clear()
    ran: list[str] = []
    real = text._segmenter

    def counted(language: str):  # noqa: ANN202
        ran.append(language)
        return real(language)

    monkeypatch.setattr(text, "_segmenter", counted)
    assert split_sentences(summary) == picked and len(picked) == 2
    assert ran == []  # no pysbd over a summary made of known sentences
    # Parts that are not of the text are not taken: that text still goes to pysbd.
    text.remember_joined("Made up. Of parts.", "en", ["Not in it."])
    assert split_sentences("Made up. Of parts.") == ["Made up.", "Of parts."] and ran == ["en"]
