"""Classic Outlook (the Word engine): the compiled email carries fixed-width ghost tables, a font stack Outlook
has and PixelsPerInch 96, and the preflight rule notices when one is missing."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from newsletter.render.check import preflight
from newsletter.render.engine import render_issue
from newsletter.render.outlook import outlook_fonts
from tests.fixtures.issues import NOW, make_issue, make_newsletter

ROOT = Path(__file__).parent.parent


def render(templates: Path | None = None, compiler: str = "mrml", **newsletter):  # noqa: ANN003, ANN201
    return render_issue(make_issue(3), make_newsletter(**newsletter), base_url="https://news.example.org", now=NOW,
                        templates_dir=templates, compiler=compiler)


def outlook(report) -> dict[str, str]:  # noqa: ANN001
    return {f.code: f"{f.level} {f.message}" for f in report.findings if f.code.startswith("outlook")}


@pytest.mark.parametrize("compiler", ["mrml", "mjml"])
def test_the_compiled_email_carries_what_outlook_needs(compiler: str) -> None:
    rendered = render(compiler=compiler)
    found = outlook(preflight(rendered))
    assert found["outlook-width"].startswith("ok classic Outlook gets fixed-width tables (600 px)")
    assert found["outlook-font"] == "ok classic Outlook gets fonts it has ('Segoe UI', Helvetica, Arial, sans-serif)"
    assert "outlook-dpi" not in found  # MJML's PixelsPerInch 96 is there
    # The Outlook-only stylesheet, in a conditional comment, with the quotes CSS needs (not &#39;).
    (style,) = re.findall(r"<!--\[if mso\]><style[^>]*>(.*?)</style><!\[endif\]-->", rendered.html, re.S)
    assert "font-family: 'Segoe UI', Helvetica, Arial, sans-serif !important" in style


def test_without_ghost_tables_outlook_stretches_the_email_and_the_preflight_fails() -> None:
    rendered = render()
    html = re.sub(r"<!--\[if mso \| IE\]>.*?<!\[endif\]-->", "", rendered.html, flags=re.S)
    report = preflight(replace(rendered, html=html))
    assert outlook(report)["outlook-width"].startswith("fail no fixed-width tables")
    assert report.failed


def test_a_template_without_outlook_fonts_warns_unless_its_stack_starts_with_a_windows_font(tmp_path: Path) -> None:
    digest = (ROOT / "templates" / "digest.mjml.j2").read_text()
    without = re.sub(r"\s*<mj-raw><!--\[if mso\]>.*?</mj-raw>", "", digest, flags=re.S)
    assert without != digest
    (tmp_path / "digest.mjml.j2").write_text(without)
    found = outlook(preflight(render(tmp_path)))
    assert found["outlook-font"].startswith("warn the font stack starts with 'system-ui', which Windows lacks")
    georgia = outlook(preflight(render(tmp_path, theme={"font_family": "Georgia, 'Times New Roman', serif"})))
    assert georgia["outlook-font"].startswith("ok")


def test_outlook_fonts_keeps_the_windows_fonts_of_a_stack() -> None:
    assert outlook_fonts("system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif") == \
        "'Segoe UI', Helvetica, Arial, sans-serif"
    assert outlook_fonts("Inter, 'Source Serif 4', serif") == "Georgia, serif"
    assert outlook_fonts("'Fira Code', monospace") == "'Courier New', monospace"
    assert outlook_fonts("Lato") == "Arial, sans-serif"
