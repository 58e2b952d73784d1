"""Article extraction: the same text however often a page is read, tables kept, CJK pages read as articles,
summaries and quotes for them, and summaries that stand on their own."""

from __future__ import annotations

from pathlib import Path

from newsletter.collect.extract import extract
from newsletter.editorial.quotes import extract_quotes
from newsletter.editorial.summarize import extractive_summary
from newsletter.text import split_sentences, word_count

FIXTURES = Path(__file__).parent / "fixtures" / "editorial"


def test_a_page_read_many_times_in_one_process_keeps_its_text() -> None:
    # trafilatura's deduplicate option remembered paragraphs for the whole process: the 4th read came back empty.
    html = (FIXTURES / "harbour-bridge.html").read_bytes()
    first = extract(html, "https://x.test/a", "text/html")
    assert first.status == "ok" and word_count(first.text) > 100
    for n in range(5):
        again = extract(html, f"https://y{n}.test/copy", "text/html")
        assert (again.status, again.text) == ("ok", first.text)


def test_tables_are_kept_as_text_and_cjk_words_are_counted() -> None:
    page = extract((FIXTURES / "zh-tram.html").read_bytes(), "https://x.test/zh", "text/html")
    assert page.status == "ok", page.error  # 200-odd characters: an article, not "a few words"
    assert "试运行" in page.text and "二〇二八年夏季" in page.text
    assert "首页" not in page.text and "版权所有" not in page.text


def test_chinese_article_gets_a_summary_and_a_quote() -> None:
    page = extract((FIXTURES / "zh-tram.html").read_bytes(), "https://x.test/zh", "text/html")
    assert split_sentences("河滨市议会批准了线路。预计二〇二九年建成！是真的吗？") == [
        "河滨市议会批准了线路。",
        "预计二〇二九年建成！",
        "是真的吗？",
    ]
    summary = extractive_summary(page.text, title=page.title or "", language=page.language)
    assert summary and summary in page.text.replace("\n", "")
    quotes = extract_quotes(page.text, summary=summary, language=page.language)
    speech = [q for q in quotes if q.kind == "speech"]
    assert [q.text for q in speech] == ["这条电车线路将改变整整一代人上学和上班的方式。"]
    assert all(page.text[q.start : q.end] == q.text for q in quotes)


def test_japanese_article_gets_a_summary_and_a_quote() -> None:
    page = extract((FIXTURES / "ja-rail.html").read_bytes(), "https://x.test/ja", "text/html")
    assert page.status == "ok", page.error
    summary = extractive_summary(page.text, title=page.title or "", language=page.language)
    assert summary.startswith("北浜市議会は水曜日")
    [quote] = [q for q in extract_quotes(page.text, language=page.language) if q.kind == "speech"]
    assert quote.text == "この路面電車は、一つの世代の通学と通勤を大きく変えるだろう"
    assert page.text[quote.start : quote.end] == quote.text


def test_summary_never_opens_with_the_writer_and_never_strands_a_sentence() -> None:
    text = (
        "I spent a week on the night shift at the county's only emergency room to see the strain for myself.\n"
        "The county hospital will close its emergency room to new patients at night from March, its board "
        "decided on Tuesday.\n"
        "It failed.\n"
        "Patients who arrive after ten at night will be sent to the regional hospital forty kilometres away.\n"
        "The board's plan to hire twenty nurses from abroad collapsed when the visas were refused in January.\n"
        "But the board says the closure is temporary and will end when the new nurses arrive next year.\n"
    )
    summary = extractive_summary(text, title="County hospital to close emergency room at night", max_words=60)
    first = split_sentences(summary)[0]
    assert not first.startswith("I ") and first.startswith("The county hospital")
    for sent in split_sentences(summary):
        if sent.startswith(("But", "It ")):
            assert split_sentences(text)[split_sentences(text).index(sent) - 1] in summary


def test_readability_is_chosen_only_when_it_adds_the_article_not_the_furniture() -> None:
    from newsletter.collect.extract import _prefer_readability

    lede = (
        "The county approved a new tram line on Wednesday that will link the university to the central station.\n"
        "The line will run for nine kilometres and stop at fourteen stations along the river.\n"
    )
    rest = "Construction is expected to cost 300 million euros, most of it paid by the national government.\n"
    links = "Home\nSport\nWeather\nMost read\nTop ten cheapest cities\nContact us\n"
    assert _prefer_readability(lede, lede + rest)  # trafilatura dropped a paragraph of the article
    assert not _prefer_readability(lede + rest, lede + rest + links * 3)  # readability added a menu
    assert not _prefer_readability(lede + rest, lede)  # readability kept less
