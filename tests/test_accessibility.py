"""The accessibility rules of the preflight: the shipped templates pass every one, in both reading directions and
with pictures; a template (or theme) that breaks a rule is caught, failing on the serious ones."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from newsletter.render.accessibility import contrast, parse_colour
from newsletter.render.check import Report, preflight
from newsletter.render.engine import render_issue
from tests.fixtures.issues import NOW, make_issue, make_newsletter

A11Y = {"lang", "dir", "table-role", "headings", "link-text", "contrast", "font-size", "img-alt"}


def render(tmp_path: Path | None = None, header: str | None = None, **newsletter):  # noqa: ANN003, ANN201
    templates = None
    if header is not None and tmp_path is not None:
        (tmp_path / "partials").mkdir(parents=True, exist_ok=True)
        (tmp_path / "partials" / "header.mjml.j2").write_text(header)
        templates = tmp_path
    issue = make_issue(6)
    issue.items[0].image_url = "https://example.org/img/1.jpg"
    return render_issue(issue, make_newsletter(**newsletter), base_url="https://news.example.org", now=NOW,
                        templates_dir=templates, compiler="mrml")


def findings(report: Report, code: str) -> list[str]:
    return [str(f) for f in report.findings if f.code == code and f.level != "ok"]


def section(body: str) -> str:
    return f"<mj-section><mj-column><mj-text>{body}</mj-text></mj-column></mj-section>\n"


H1 = '<h1 style="margin:0">Civic Digest</h1>'


@pytest.mark.parametrize("newsletter", [{}, {"language": "he", "direction": "rtl"}, {"language": "fr"}])
def test_the_shipped_templates_pass_every_rule(newsletter: dict) -> None:
    report = preflight(render(**newsletter))
    problems = [str(f) for f in report.findings if f.code in A11Y and f.level != "ok"]
    assert not problems, "\n".join(problems)
    assert {"lang", "headings", "link-text", "contrast", "font-size"} <= report.codes("ok")
    assert [f.message for f in report.findings if f.code == "contrast"] == [
        "light theme: all text meets WCAG AA contrast (4.5:1, large text 3:1)",
        "dark theme: all text meets WCAG AA contrast (4.5:1, large text 3:1)"]


def test_no_lang_fails() -> None:
    rendered = render()
    html = rendered.html.replace(' lang="en"', "", 1)
    (line,) = findings(preflight(replace(rendered, html=html)), "lang")
    assert line.startswith("FAIL lang: no lang attribute on <html>")


def test_a_right_to_left_language_laid_out_left_to_right_fails() -> None:
    (line,) = findings(preflight(render(language="ar", direction="ltr")), "dir")
    assert line.startswith("FAIL dir: lang='ar' is written right to left but <html> has dir='ltr'")


def test_no_dir_warns() -> None:
    rendered = render()
    html = rendered.html.replace(' dir="ltr"', "", 1)
    (line,) = findings(preflight(replace(rendered, html=html)), "dir")
    assert line.startswith("WARN dir")


def test_a_layout_table_without_role_presentation_fails(tmp_path: Path) -> None:
    header = ("<mj-section><mj-column><mj-table><tr><td>Issue 42</td></tr></mj-table>"
              f"<mj-text>{H1}</mj-text></mj-column></mj-section>")
    report = preflight(render(tmp_path, header))
    (line,) = findings(report, "table-role")
    assert line.startswith('FAIL table-role: 1 layout table(s) without role="presentation"')
    # A data table (header cells) is a real table: left alone.
    data = header.replace("<tr><td>Issue 42</td></tr>", "<tr><th>Issue</th></tr><tr><td>42</td></tr>")
    assert not findings(preflight(render(tmp_path, data)), "table-role")


def test_an_image_without_alt_fails_and_a_decorative_one_passes(tmp_path: Path) -> None:
    missing = section(H1 + '<img src="https://example.org/rule.png" width="10" height="10">')
    assert findings(preflight(render(tmp_path, missing)), "img-alt")[0].startswith("FAIL img-alt")
    decorative = section(H1 + '<img src="https://example.org/rule.png" alt="" width="10" height="10">')
    report = preflight(render(tmp_path, decorative))
    assert not findings(report, "img-alt") and not findings(report, "link-text")


def test_headings_out_of_order_warn(tmp_path: Path) -> None:
    report = preflight(render(tmp_path, section('<h3 style="margin:0">Civic Digest</h3>')))
    (line,) = findings(report, "headings")
    assert line.startswith("WARN headings: the first heading is an <h3>, not an <h1>")
    report = preflight(render(tmp_path, section(H1 + "<h4>Contents</h4>")))
    assert "<h1> is followed by <h4> (a level skipped)" in findings(report, "headings")[0]
    # The name as a paragraph: the story titles (h2) come first.
    report = preflight(render(tmp_path, section("<p>Civic Digest</p>")))
    assert findings(report, "headings") == ["WARN headings: the first heading is an <h2>, not an <h1>"]


@pytest.mark.parametrize("text", ["here", "Click here", "Read more…", "MORE"])
def test_link_text_that_does_not_say_where_it_goes_warns(tmp_path: Path, text: str) -> None:
    header = section(H1 + f'<p>Our survey: <a href="https://example.org/survey">{text}</a></p>')
    (line,) = findings(preflight(render(tmp_path, header)), "link-text")
    assert line.startswith(f"WARN link-text: link text {text!r} (to 'https://example.org/survey')")
    # The same link named for where it goes passes.
    named = section(H1 + '<p><a href="https://example.org/survey">Take the readers\' survey</a></p>')
    assert not findings(preflight(render(tmp_path, named)), "link-text")


def test_a_link_with_nothing_to_read_fails(tmp_path: Path) -> None:
    header = section(H1 + '<a href="https://example.org/"><img src="https://example.org/logo.png" alt="" '
                          'width="40" height="40"></a>')
    (line,) = findings(preflight(render(tmp_path, header)), "link-text")
    assert line.startswith("FAIL link-text: link to 'https://example.org/' has no text")


def test_low_contrast_in_the_light_theme_fails() -> None:
    report = preflight(render(theme={"muted": "#a1a1aa"}))
    lines = findings(report, "contrast")
    assert lines and all(line.startswith("FAIL contrast: light theme: text #a1a1aa on #") for line in lines)
    assert "under WCAG AA's 4.5:1 for body text" in lines[0]


def test_low_contrast_in_the_dark_theme_fails() -> None:
    report = preflight(render(theme={"dark_accent": "#7c2d12"}))  # a light theme's accent kept for dark mode
    lines = findings(report, "contrast")
    assert lines and all("dark theme: text #7c2d12 on #18181b" in line for line in lines), lines
    assert not [line for line in lines if "light theme" in line]


def test_large_text_needs_three_to_one_only(tmp_path: Path) -> None:
    grey = "#8a8a8a"  # 3.45:1 on white: enough for a 28px heading, not for body text
    ok = section(f'<h1 style="margin:0;font-size:28px;color:{grey}">Civic Digest</h1>')
    assert not [line for line in findings(preflight(render(tmp_path, ok)), "contrast") if "light" in line]
    small = section(H1 + f'<p style="color:{grey}">Issue 42</p>')
    (line,) = [x for x in findings(preflight(render(tmp_path, small)), "contrast") if "light" in x]
    assert f"text {grey} on #ffffff has a contrast of 3.45:1" in line or f"text {grey} on #f4f4f5" in line


def test_text_too_small_on_a_phone_warns_unless_a_mobile_rule_raises_it(tmp_path: Path) -> None:
    header = section(H1 + '<p class="tiny" style="font-size:11px">Issue 42 · 9 March</p>')
    (line,) = findings(preflight(render(tmp_path, header)), "font-size")
    assert line.startswith("WARN font-size: text at 11px on a phone (e.g. 'Issue 42 · 9 March')")
    rendered = render(tmp_path, header)
    html = rendered.html.replace("</head>", "<style>@media (max-width: 480px) { .nl .tiny { font-size: 14px "
                                           "!important; } }</style></head>")
    assert not findings(preflight(replace(rendered, html=html)), "font-size")


def test_the_contrast_ratio_is_wcag_s() -> None:
    white, black = parse_colour("#fff"), parse_colour("black")
    assert white and black
    assert round(contrast(black, white), 2) == 21.0
    assert round(contrast(parse_colour("#767676") or black, white), 2) == 4.54  # the well-known AA grey
    half = parse_colour("rgba(0, 0, 0, 0.5)")
    assert half and 3.9 < contrast(half, white) < 4.0  # blended over the background
