"""Key quotes: verbatim, with speakers, across paragraphs, never a fragment or a repeat of the summary."""

from __future__ import annotations

from pathlib import Path

from newsletter.collect.extract import extract
from newsletter.editorial.quotes import extract_quotes
from newsletter.text import appears_in, word_count

FIXTURES = Path(__file__).parent / "fixtures" / "editorial"


def _direct(text: str, **kw) -> list:
    return [q for q in extract_quotes(text, quotable_fallback=False, **kw)]


def test_curly_quote_with_speaker_after() -> None:
    text = (
        "The lab released its new model on Thursday.\n"
        "“Open models are the only way most countries will ever control their own AI,” said LeCun.\n"
    )
    [quote] = _direct(text)
    assert quote.text == "Open models are the only way most countries will ever control their own AI"
    assert quote.speaker == "LeCun"
    assert appears_in(quote.text, text)


def test_straight_quote_with_speaker_before() -> None:
    text = 'The minister was blunt.\nHelen Clark said: "We will not sign a deal that leaves farmers behind."'
    [quote] = _direct(text)
    assert quote.text == "We will not sign a deal that leaves farmers behind."
    assert quote.speaker == "Helen Clark"


def test_speaker_named_after_a_description_and_pronoun_follow_up() -> None:
    text = (
        '"I waited two years for a fix before publishing this," developer Ammar Askar wrote on Thursday.\n'
        "The company has not commented.\n"
        '"The bug can take down any server running the game in seconds," he said.\n'
    )
    quotes = _direct(text)
    assert [q.speaker for q in quotes] == ["Ammar Askar", "Ammar Askar"]


def test_nested_quotes_are_kept_inside() -> None:
    text = "“When they told me ‘the bridge is safe’ I did not believe a single word of it,” said Ms Berg.\n"
    [quote] = _direct(text)
    assert quote.text == "When they told me ‘the bridge is safe’ I did not believe a single word of it"
    assert quote.speaker == "Ms Berg"


def test_quote_that_runs_over_two_paragraphs_is_one_quote() -> None:
    text = (
        "Shopkeepers are worried.\n"
        "“If the bridge is shut all summer, half of the shops on this street will not reopen.\n"
        "“Nobody here is against the bridge, we are against losing our livelihoods,” said Anna Sjöberg.\n"
    )
    [quote] = _direct(text)
    assert quote.text.startswith("If the bridge is shut all summer")
    assert quote.text.endswith("we are against losing our livelihoods")
    assert quote.speaker == "Anna Sjöberg"
    assert appears_in(quote.text, text)  # the second paragraph's opening mark is normalised away


def test_fragments_and_titles_are_not_quotes() -> None:
    text = (
        'Mr Obama said it was "distressing" and called for "common sense gun laws".\n'
        'She is the author of "A Paradise Built In Hell And Other Stories About Disasters".\n'
        'He said the rules "will not create a loophole big enough to drive a truck through."\n'
    )
    assert _direct(text) == []


def test_text_without_quotes_falls_back_to_quotable_sentences() -> None:
    text = (
        "The river flooded three villages overnight after a week of heavy rain.\n"
        "Emergency crews evacuated more than four hundred residents to schools on higher ground.\n"
        "It was the worst flood in the region since records began in 1910.\n"
        "Officials expect the water to recede by the end of the week if the rain stops.\n"
    )
    assert _direct(text) == []
    summary = "The river flooded three villages overnight after a week of heavy rain."
    quotes = extract_quotes(text, summary=summary)
    assert quotes and all(not q.direct and q.speaker is None for q in quotes)
    assert all(appears_in(q.text, text) for q in quotes)
    assert all(q.text != summary for q in quotes)
    assert not any(q.text.startswith("It was") for q in quotes)  # leans on context


def test_quotes_never_repeat_the_summary_and_are_unique() -> None:
    page = extract((FIXTURES / "harbour-bridge.html").read_bytes(), "https://x.test/a", "text/html")
    summary = (
        "“We have chosen the harder road because it is the right one for this town,” said Council Leader Ingrid Holm."
    )
    quotes = extract_quotes(page.text, summary=summary, limit=3)
    texts = [q.text for q in quotes]
    assert len(texts) == len(set(texts)) == 3
    assert not any("harder road" in t for t in texts)
    for q in quotes:
        assert appears_in(q.text, page.text)
        assert word_count(q.text) >= 6


def test_french_guillemets() -> None:
    page = extract((FIXTURES / "fr-velo.html").read_bytes(), "https://x.test/fr", "text/html")
    [quote] = _direct(page.text, language=page.language)
    assert quote.text.startswith("Nous voulons que le vélo soit le choix évident")
    assert quote.speaker == "Claire Vasseur"  # "», a déclaré la maire, Claire Vasseur"
    assert appears_in(quote.text, page.text)


def test_limit_zero_and_empty_text() -> None:
    assert extract_quotes("", limit=3) == []
    assert extract_quotes("“This would be a perfectly good quote to take,” she said.", limit=0) == []


def test_pronoun_resolves_to_the_person_introduced_in_reported_speech() -> None:
    text = (
        "Maria Okafor, who leads the company’s research team, said the firm had debated the decision for a year. "
        '"In the end we decided that a model people cannot inspect is not really open," she said.\n'
    )
    [quote] = _direct(text)
    assert quote.speaker == "Maria Okafor"


def test_quote_broken_by_a_paragraph_break_without_a_new_mark() -> None:
    text = "“We will build it with our own hands\nand we will finish it before the summer,” said Ingrid Holm.\n"
    [quote] = _direct(text)
    assert quote.text == "We will build it with our own hands and we will finish it before the summer"
    assert quote.speaker == "Ingrid Holm" and appears_in(quote.text, text)


def test_unclosed_quote_does_not_swallow_the_article() -> None:
    paras = ["“This quote is never closed and goes on for a while."] + [
        f"Paragraph {i} of plain reporting about the council meeting on Tuesday." for i in range(6)
    ]
    assert _direct("\n".join(paras)) == []


def test_narration_is_not_mixed_with_real_speech() -> None:
    text = (
        "The river flooded three villages overnight after a week of heavy rain.\n"
        "Emergency crews evacuated more than four hundred residents to schools on higher ground.\n"
        "“We have never seen the water rise this fast in a single night,” said fire chief Lena Berg.\n"
        "Officials expect the water to recede by the end of the week if the rain stops.\n"
    )
    quotes = extract_quotes(text, limit=3)
    assert [(q.text, q.speaker, q.direct) for q in quotes] == [
        ("We have never seen the water rise this fast in a single night", "Lena Berg", True)
    ]


# The patterns below are the ones real pages got wrong (issue 15), rewritten as the project's own text.


def _only(text: str, **kw) -> list[tuple[str, str | None, str]]:
    return [(q.text, q.speaker, q.kind) for q in extract_quotes(text, **kw)]


def test_every_quote_is_verbatim_at_its_offsets() -> None:
    text = (
        "The county approved the tram line on Wednesday after a four-hour meeting.\n"
        "“This tram will change how a whole generation gets to class and to work,” said Mara Ilic.\n"
        "Opponents walked out.  “We  were never asked what we wanted for our street,” said Tom Reyes.\n"
    )
    quotes = extract_quotes(text)
    assert [q.speaker for q in quotes] == ["Mara Ilic", "Tom Reyes"]
    for q in quotes:
        assert q.kind == "speech" and text[q.start : q.end] == q.text
    data = quotes[0].as_dict()
    assert data["kind"] == "speech" and text[data["start"] : data["end"]] == data["text"]


def test_she_added_is_never_the_speaker_but_resolves_to_the_woman_named_before() -> None:
    text = (
        "Rescuers reached the flooded farmhouse two hours after the first call.\n"
        "Maria Lopez, a volunteer with the county rescue team, said the crews had done all they could.\n"
        "She added: “They never stood a chance of saving her with the equipment they had.”\n"
    )
    [(quote, speaker, kind)] = _only(text)
    assert quote == "They never stood a chance of saving her with the equipment they had."
    assert (speaker, kind) == ("Maria Lopez", "speech")


def test_a_pronoun_with_nobody_it_can_refer_to_names_no_one() -> None:
    text = (
        "Mr Obama said the bill had failed in the Senate again.\n"
        "She added: “They never stood a chance of passing it in this Congress.”\n"
    )
    [(_, speaker, _)] = _only(text)
    assert speaker is None  # "she" cannot be Mr Obama, and "She" is not a name


def test_a_capitalised_word_is_not_a_speaker() -> None:
    text = (
        "The advice columnist had a rule for every awkward dinner.\n"
        "Don’t say “Courtney, you should have known better than to trust them with the car.”\n"
        "Don’t say “We all warned you about this years ago and you never listened.”\n"
    )
    quotes = extract_quotes(text)
    assert quotes and all(q.speaker is None and q.kind == "speech" for q in quotes)


def test_a_thread_of_commenters_never_shifts_a_quote_to_the_one_before() -> None:
    text = (
        "Readers responded within minutes of the redesign going live.\n"
        "Jen Park wrote: “The new layout is much harder to read on a phone screen.”\n"
        "“I would pay for a version without the autoplaying video ads,” another reader wrote.\n"
        "“Bring back the old font, please, it was far easier on the eyes,” wrote a third.\n"
    )
    assert [s for _, s, _ in _only(text)] == ["Jen Park", None, None]


def test_saying_comma_names_the_subject() -> None:
    text = (
        "The vote was closer than anyone expected.\n"
        "Senator Ann Ruiz responded on social media within the hour, saying, “We will not stand by while "
        "the state closes rural hospitals.”\n"
    )
    [(_, speaker, _)] = _only(text)
    assert speaker == "Senator Ann Ruiz"


def test_it_said_in_a_statement_resolves_to_the_organisation() -> None:
    text = (
        "Brightline Corp cut 200 jobs at its Leeds plant on Monday.\n"
        "“We regret the impact these changes will have on our staff and their families,” it said in a "
        "statement.\n"
    )
    [(_, speaker, kind)] = _only(text)
    assert (speaker, kind) == ("Brightline Corp", "speech")


def test_said_in_a_letter_to_someone_is_not_said_by_them() -> None:
    text = (
        "The mayors of the state's five largest cities asked for the ban to be lifted.\n"
        "“Local officials know their communities best and must be free to act,” the mayors said in a letter "
        "to Abbott last month: “Let us do the jobs we were elected to do.”\n"
        "“Masks in schools are a decision for parents and teachers together,” Mayor Ron Nirenberg said in a "
        "letter to Abbott last month.\n"
    )
    speakers = [s for _, s, _ in _only(text)]
    assert "Abbott" not in speakers
    assert speakers[:2] == [None, None] and speakers[2] is not None and speakers[2].endswith("Ron Nirenberg")


def test_a_review_headline_in_quotes_is_not_speech() -> None:
    text = (
        "The game costs ten dollars to unlock after the first three levels.\n"
        "Our review, “Nintendo’s Best Phone Game Yet Is Also Its Most Expensive One”, went up on Thursday.\n"
    )
    assert all(q.kind != "speech" for q in extract_quotes(text))


def test_page_furniture_and_instructions_are_never_passages() -> None:
    from collections import Counter

    text = (
        "Nintendo released Super Mario Run for iPhone on Thursday after months of delays.\n"
        "To see Super Mario Run in action, check out the footage below:\n"
        "To start checking it again, simply run r2e unpause n.\n"
        "Subscribe to our newsletter to get the latest gaming news every single morning.\n"
        "This means the full game will cost players more than any other mobile title the company sells.\n"
        "The full game costs ten dollars, which is more than most mobile games charge for everything.\n"
        "Nintendo expects the game to reach more than a hundred million phones by the end of next year.\n"
    )
    rejected: Counter[str] = Counter()
    quotes = extract_quotes(
        text, summary="Nintendo released Super Mario Run for iPhone on Thursday.", rejected=rejected
    )
    assert quotes and all(q.kind == "passage" and q.speaker is None for q in quotes)
    shown = [q.text for q in quotes]
    assert not any(s.startswith(("To see", "To start", "Subscribe", "This means", "Nintendo released")) for s in shown)
    assert all(text[q.start : q.end] == q.text for q in quotes)
    assert rejected["page furniture"] >= 2 and rejected["needs its neighbour"] >= 1


def test_stored_quotes_keep_their_kind_and_old_ones_are_speech_only_with_a_speaker() -> None:
    from newsletter.compose.issue import quote_from_dict

    text = "Officials expect the water to recede by the end of the week if the rain stops."
    [passage] = extract_quotes(text + "\n" + text.replace("week", "month"), limit=1)
    back = quote_from_dict(passage.as_dict())
    assert (back.kind, back.speaker, back.start, back.end) == ("passage", None, passage.start, passage.end)
    assert quote_from_dict({"text": "We will rebuild the bridge.", "speaker": "Ann Ruiz"}).kind == "speech"
    assert quote_from_dict({"text": "The bridge closed in June.", "speaker": None}).kind == "passage"
