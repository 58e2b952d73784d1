"""sanitized_text (the collector's fast text of sanitized HTML) must give exactly what html_to_text gives."""

from __future__ import annotations

import random

from newsletter.collect.sanitize import html_to_text, sanitize_html, sanitized_text

TAGS = ["p", "div", "b", "a", "pre", "table", "tr", "td", "tbody", "caption", "li", "ul", "h1", "span", "br", "img",
        "script", "style", "iframe", "blockquote", "q", "form", "select", "option", "textarea", "em", "dl", "dt",
        "dd", "figure", "figcaption", "svg", "math", "template", "xmp", "plaintext", "noscript", "title", "code", "hr"]
TEXTS = ["x", " ", "\n", "a b", "&amp;", "&lt;", "&nbsp;", "\u00a0", "\r\n", "\t", "&#150;", "\x92", "<", ">", "&",
         '"', "'", "  ", "&copy;", "\x00", "<!-- c -->", "<![CDATA[z]]>", "&#x81;", "y\n\nz"]
ATTRS = ["", ' href="http://e.x/a>b"', ' title="a<b>c"', " alt='q\"r'", " src=x.png", ' class="c"', " title=>"]


def test_same_text_as_a_second_parse_on_tag_soup() -> None:
    rng = random.Random(7)
    differ = []
    for _ in range(20_000):
        parts = []
        for _ in range(rng.randint(1, 14)):
            r = rng.random()
            if r < 0.35:
                parts.append(f"<{rng.choice(TAGS)}{rng.choice(ATTRS)}>")
            elif r < 0.6:
                parts.append(f"</{rng.choice(TAGS)}>")
            else:
                parts.append(rng.choice(TEXTS))
        clean = sanitize_html("".join(parts), "http://e.x/")
        if sanitized_text(clean) != html_to_text(clean):
            differ.append(clean)
    assert differ == []


def test_tables_and_pre_keep_the_parsers_reading() -> None:
    clean = sanitize_html("<table>stray<tr><td>cell</td></tr></table><pre>\nkept</pre>", "http://e.x/")
    assert sanitized_text(clean) == html_to_text(clean)
