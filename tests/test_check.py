"""Preflight: a normal issue passes; each thing that would break the email in an inbox fails with a clear line."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from newsletter.render.check import css_features, preflight
from newsletter.render.engine import Rendered, render_issue
from tests.fixtures.issues import NOW, make_issue, make_newsletter


def render(issue=None, templates_dir: Path | None = None) -> Rendered:
    return render_issue(issue or make_issue(), make_newsletter(), base_url="https://news.example.org", now=NOW,
                        templates_dir=templates_dir)


def lines(report, level: str) -> list[str]:
    return [str(f) for f in report.by_level(level)]


def override(tmp_path: Path, name: str, content: str) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    return tmp_path


@pytest.mark.parametrize("compiler", ["mrml", "mjml"])
def test_normal_issue_passes_without_warnings(compiler: str) -> None:
    rendered = render_issue(make_issue(), make_newsletter(), base_url="https://news.example.org", now=NOW,
                            compiler=compiler)
    report = preflight(rendered)
    assert not report.failed, report.to_text()
    assert not report.by_level("warn"), report.to_text()
    assert {"size", "unsubscribe-html", "unsubscribe-text", "text-part", "link", "css"} <= report.codes("ok")
    assert "preflight passed" in report.to_text()


def test_huge_issue_fails_over_the_clipping_point() -> None:
    report = preflight(render(make_issue(40)))
    assert report.failed and report.codes("fail") == {"size"}
    (line,) = lines(report, "fail")
    assert "Gmail clips messages over 102.0 KB" in line


def test_issue_near_the_clipping_point_warns() -> None:
    rendered = render(make_issue(12))
    padding = "<p>" + "x" * (33 * 1024) + "</p>"
    padded = replace(rendered, html=rendered.html.replace("</div></body>", padding + "</div></body>"))
    report = preflight(padded)
    assert not report.failed and "size" in report.codes("warn")


def test_image_without_alt_fails(tmp_path: Path) -> None:
    templates = override(tmp_path, "partials/header.mjml.j2",
                         '<mj-section><mj-column><mj-image src="https://example.org/banner.png" />'
                         "</mj-column></mj-section>\n")
    report = preflight(render(make_issue(2), templates))
    assert report.codes("fail") == {"img-alt"}
    (line,) = lines(report, "fail")
    assert "'https://example.org/banner.png' has no alt text" in line


def test_image_without_width_warns() -> None:
    rendered = render(make_issue(1))
    html = rendered.html.replace("</body>", '<img src="https://example.org/p.png" alt="chart"></body>')
    report = preflight(replace(rendered, html=html))
    assert not report.failed and "img-width" in report.codes("warn")


def test_javascript_link_fails() -> None:
    issue = make_issue(2)
    issue.items[1].url = "javascript:alert(document.cookie)"
    report = preflight(render(issue))
    assert report.codes("fail") == {"link"}
    (line,) = lines(report, "fail")
    assert "'javascript:alert(document.cookie)'" in line and issue.items[1].title[:30] in line
    assert "dangerous" in line


def test_relative_and_other_scheme_links_fail_but_mailto_passes() -> None:
    rendered = render(make_issue(1))
    html = rendered.html.replace(  # inside the themed wrapper, as a template's own links are
        "</div></body>", '<a href="/archive">a</a><a href="ftp://example.org/f">b</a>'
        '<a href="mailto:e@example.org">c</a></div></body>')
    report = preflight(replace(rendered, html=html))
    fails = lines(report, "fail")
    assert len(fails) == 2
    assert "'/archive'" in fails[0] and "relative" in fails[0]
    assert "'ftp://example.org/f'" in fails[1] and "not an http(s) or mailto link" in fails[1]


def test_template_without_unsubscribe_link_fails(tmp_path: Path) -> None:
    templates = override(tmp_path, "partials/footer.mjml.j2",
                         "<mj-section><mj-column><mj-text>Thanks for reading.</mj-text></mj-column></mj-section>\n")
    report = preflight(render(make_issue(2), templates))
    assert report.codes("fail") == {"unsubscribe-html"}
    (line,) = lines(report, "fail")
    assert "the HTML part has no unsubscribe link" in line


def test_text_template_without_unsubscribe_link_fails(tmp_path: Path) -> None:
    templates = override(tmp_path, "digest.txt.j2", "{% for item in items %}{{ item.title }}\n{% endfor %}")
    report = preflight(render(make_issue(2), templates))
    assert report.codes("fail") == {"unsubscribe-text"}


def test_empty_text_part_fails(tmp_path: Path) -> None:
    report = preflight(render(make_issue(1), override(tmp_path, "digest.txt.j2", "\n")))
    assert {"text-part", "unsubscribe-text"} == report.codes("fail")


def test_list_unsubscribe_headers_are_checked_when_given() -> None:
    rendered = render(make_issue(1))
    good = {"List-Unsubscribe": "<https://news.example.org/u/abc>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
    assert "list-unsubscribe" in preflight(rendered, headers=good).codes("ok")
    no_post = preflight(rendered, headers={"List-Unsubscribe": "<https://news.example.org/u/abc>"})
    assert "list-unsubscribe" in no_post.codes("warn") and not no_post.failed
    missing = preflight(rendered, headers={"Subject": "x"})
    assert missing.codes("fail") == {"list-unsubscribe"}


def test_the_mailers_real_headers_pass() -> None:
    from newsletter.deliver.issue_mail import make_message
    from newsletter.deliver.mailer import Recipient
    from newsletter.deliver.message import build_email

    rendered = render(make_issue(1))
    message = make_message(make_newsletter(), rendered.subject, rendered.html, rendered.text, issue_number=42,
                           issue_id=7)
    email = build_email(message, Recipient("r@example.org", values={"unsubscribe_url": "https://n.example/u/t"}))
    report = preflight(rendered, headers=dict(email.items()))
    assert "list-unsubscribe" in report.codes("ok"), report.to_text()


def test_unsupported_css_in_a_user_template_warns(tmp_path: Path) -> None:
    templates = override(
        tmp_path, "partials/intro.mjml.j2",
        '<mj-text><div style="display:flex;border-radius:8px;box-shadow:0 0 4px #000">{{ issue.intro }}</div>'
        "</mj-text>\n",
    )
    report = preflight(render(make_issue(1), templates))
    warns = "\n".join(lines(report, "warn"))
    assert not report.failed
    assert "display:flex is not supported by Outlook (Windows)" in warns
    assert "box-shadow is not supported by Gmail (web)" in warns
    assert "caniemail.com/features/css-box-shadow" in warns


def test_oversized_style_block_warns(tmp_path: Path) -> None:
    rules = "".join(f".c{n} {{ color: #000000; padding: 1px; }}\n" for n in range(700))
    templates = override(tmp_path, "partials/style.mjml.j2", f"<mj-style>{rules}</mj-style>\n")
    report = preflight(render(make_issue(1), templates))
    assert "style-size" in report.codes("warn") and not report.failed


def test_css_features_are_recognised() -> None:
    used = css_features(["margin-top:4px;color:rgb(0,0,0);width:10rem"],
                        ["@media (prefers-color-scheme: dark) { a:hover > b { color: red !important } }"])
    assert {"css-margin", "css-rgb", "css-width", "css-unit-rem", "css-at-media",
            "css-at-media-prefers-color-scheme", "css-pseudo-class-hover", "css-selector-child",
            "css-important"} <= used


def test_report_text_lists_failures_first() -> None:
    issue = make_issue(1)
    issue.items[0].url = "javascript:void(0)"
    text = preflight(render(issue)).to_text().splitlines()
    assert text[0].startswith("FAIL link:") and text[-1] == "preflight FAILED: 1 failure(s), 0 warning(s)"


# --- the commands, on the real demo issue ------------------------------------------------------------------


@pytest.fixture
def demo(workdir: Path, cli, monkeypatch: pytest.MonkeyPatch) -> Path:  # noqa: ANN001
    """`newsletter demo` run in the project folder, and the settings pointed at its database and schedule."""
    from newsletter.cli import common

    cli("demo", "--dir", "demo")
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", f"sqlite:///{workdir / 'demo' / 'demo.db'}")
    monkeypatch.setenv("NEWSLETTER_SCHEDULES_DIR", str(workdir / "demo" / "schedules"))
    common.settings.cache_clear()
    return workdir


def test_check_command_passes_on_the_demo_issue(demo: Path, cli) -> None:  # noqa: ANN001
    result = cli("check", "demo")
    assert result.exit_code == 0
    assert "FAIL" not in result.output and "preflight passed" in result.output
    assert "unsubscribe-html" in result.output and "size" in result.output
    report = json.loads(cli("check", "demo", "--json").output)
    assert report["failed"] is False and {f["code"] for f in report["findings"]} >= {"size", "link", "css"}


def test_check_command_exits_non_zero_when_the_unsubscribe_link_is_gone(demo: Path, cli, monkeypatch) -> None:  # noqa: ANN001
    from newsletter.cli import common

    override(demo / "mytemplates", "partials/footer.mjml.j2",
             "<mj-section><mj-column><mj-text>Bye.</mj-text></mj-column></mj-section>\n")
    monkeypatch.setenv("NEWSLETTER_TEMPLATES_DIR", str(demo / "mytemplates"))
    common.settings.cache_clear()
    result = cli("check", "demo", ok=False)
    assert result.exit_code == 1
    assert "FAIL unsubscribe-html: the HTML part has no unsubscribe link" in " ".join(result.output.split())
    assert "preflight FAILED" in result.output


def test_check_command_names_a_missing_issue(demo: Path, cli) -> None:  # noqa: ANN001
    result = cli("check", "demo", "--issue", "999", ok=False)
    assert result.exit_code == 1 and "no issue 999" in result.output


def test_preview_writes_the_parts_and_a_side_by_side_page(demo: Path, cli, monkeypatch) -> None:  # noqa: ANN001
    import webbrowser

    opened: list[str] = []
    monkeypatch.setattr(webbrowser, "open", lambda url, *a, **k: opened.append(url) or True)
    result = cli("preview", "demo", "--out", "pv", "--open")
    folder = demo / "pv"
    index = (folder / "index.html").read_text()
    html = (folder / "email.html").read_text()
    assert 'src="email.html"' in index and "width:600px" in index and "width:375px" in index
    assert 'src="email-dark.html"' in index and "preflight passed" in index
    assert "%%" not in html and "reader@example.org" in html  # tokens filled with sample values
    assert "@media all" in (folder / "email-dark.html").read_text()
    text = (folder / "email.txt").read_text()
    assert "Unsubscribe: " in text and text.splitlines()[0] in index
    assert opened == [(folder / "index.html").resolve().as_uri()]
    assert "index.html" in result.output
