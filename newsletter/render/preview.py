"""A preview an editor can open in any browser: the email at desktop and phone width, in dark mode, the
plain-text part and the preflight report, side by side in one page.

Files written to the output folder: email.html and email.txt (the parts as a subscriber gets them, with
sample values in place of the per-recipient tokens), email-dark.html (the same HTML with its dark-mode rules
forced on, since a page cannot switch one iframe to dark mode) and index.html (the page showing them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html import escape, unescape
from pathlib import Path

from newsletter.render import tokens
from newsletter.render.check import Report
from newsletter.render.engine import Rendered

SAMPLE_EMAIL = "reader@example.org"


@dataclass(frozen=True)
class Preview:
    index: Path
    html: Path
    text: Path
    dark: Path


def sample_values(base_url: str) -> dict[str, str]:
    return {"email": SAMPLE_EMAIL, "name": "Reader", "unsubscribe_url": f"{base_url}/unsubscribe/preview",
            "feedback_url": f"{base_url}/f/preview",
            "manage_url": f"{base_url}/manage/preview"}


def force_dark(html: str) -> str:
    """The HTML with its `prefers-color-scheme: dark` rules applied unconditionally."""
    return re.sub(r"@media\s*\(\s*prefers-color-scheme\s*:\s*dark\s*\)", "@media all", html)


def hidden_preheader(html: str) -> str:
    """The preview text as the inbox shows it: the hidden block MJML puts first in the body."""
    body = html.split("<body", 1)[-1]
    match = re.search(r'<div style="display:none[^"]*">(.*?)</div>', body, re.S)
    if not match:
        return ""
    return unescape(re.sub(r"<[^>]+>", "", match.group(1))).replace("\u034f", "").replace("\u200c", "").strip()


def _frame(title: str, src: str, width: int) -> str:
    return (f'<figure><figcaption>{escape(title)}</figcaption>'
            f'<iframe src="{escape(src)}" title="{escape(title)}" style="width:{width}px"></iframe></figure>')


def _report_html(report: Report) -> str:
    rows = "".join(
        f'<li class="{f.level}"><b>{f.level.upper()}</b> <code>{escape(f.code)}</code> {escape(f.message)}</li>'
        for f in sorted(report.findings, key=lambda f: {"fail": 0, "warn": 1, "ok": 2}[f.level])
    )
    return f'<p class="verdict {"fail" if report.failed else "ok"}">{escape(report.summary())}</p><ul>{rows}</ul>'


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Preview: {title}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 0; background: #e4e4e7; color: #18181b; }}
header {{ padding: 12px 20px; background: #18181b; color: #fafafa; }}
header h1 {{ font-size: 16px; margin: 0; }} header p {{ margin: 4px 0 0; color: #d4d4d8; }}
main {{ display: flex; gap: 20px; padding: 20px; align-items: flex-start; overflow-x: auto; }}
figure {{ margin: 0; flex: none; }} figcaption {{ font-weight: 600; margin-bottom: 6px; }}
iframe {{ height: 1400px; border: 1px solid #a1a1aa; background: #fff; display: block; }}
pre {{ width: 72ch; height: 1400px; overflow: auto; margin: 0; padding: 12px; background: #fff;
      border: 1px solid #a1a1aa; font: 13px/1.35 ui-monospace, monospace; white-space: pre; }}
section {{ padding: 0 20px 20px; }} ul {{ list-style: none; padding: 0; }} li {{ margin: 2px 0; }}
.fail {{ color: #b91c1c; }} .warn {{ color: #a16207; }} .ok {{ color: #15803d; }} .verdict {{ font-weight: 700; }}
</style></head>
<body>
<header><h1>{title}</h1><p>Subject: {subject}<br>Preheader: {preheader}<br>{size} · compiled with {compiler}</p>
</header>
<section><h2>Preflight</h2>{report}</section>
<main>
{desktop}
{mobile}
{dark}
<figure><figcaption>Plain text</figcaption><pre>{text}</pre></figure>
</main>
</body></html>
"""


def write_preview(rendered: Rendered, report: Report, out_dir: Path, *, title: str, base_url: str) -> Preview:
    out_dir.mkdir(parents=True, exist_ok=True)
    values = sample_values(base_url)
    html = tokens.fill(rendered.html, values)
    text = tokens.fill(rendered.text, values)
    paths = Preview(out_dir / "index.html", out_dir / "email.html", out_dir / "email.txt",
                    out_dir / "email-dark.html")
    paths.html.write_text(html, encoding="utf-8")
    paths.text.write_text(text, encoding="utf-8")
    paths.dark.write_text(force_dark(html), encoding="utf-8")
    page = PAGE.format(
        title=escape(title),
        subject=escape(rendered.subject),
        preheader=escape(rendered.preheader or hidden_preheader(rendered.html)),
        size=f"{len(rendered.html.encode()) / 1024:.1f} KB HTML",
        compiler=escape(rendered.compiler),
        report=_report_html(report),
        desktop=_frame("Desktop · 600 px", paths.html.name, 600),
        mobile=_frame("Phone · 375 px", paths.html.name, 375),
        dark=_frame("Phone · dark mode", paths.dark.name, 375),
        text=escape(text),
    )
    paths.index.write_text(page, encoding="utf-8")
    return paths
