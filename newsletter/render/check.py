"""Preflight: what would break the rendered issue in real mail clients, checked before anyone gets it.

`preflight(rendered)` returns a Report of findings (ok / warn / fail, a code, one line each). A schedule holds
the send when `report.failed`; `newsletter check` prints the report and exits non-zero on a failure.

CSS support comes from the caniemail data set (newsletter/render/caniemail.json, derived by
tools/caniemail_derive.py; MIT licence, see the file's "licence" field).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from html.parser import HTMLParser
from importlib import resources
from urllib.parse import urlparse

from newsletter.render import tokens
from newsletter.render.accessibility import check_accessibility
from newsletter.render.engine import Rendered
from newsletter.render.outlook import check_outlook
from newsletter.render.report import Finding, Level, Report

__all__ = ["Finding", "Level", "Report", "preflight"]


KB = 1024
# Gmail hides everything after ~102 KB of HTML behind "[Message clipped]", including the unsubscribe link.
CLIP_BYTES = 102 * KB
WARN_BYTES = 90 * KB
# Tokens grow when filled per recipient: allow for a long signed unsubscribe URL and a long address.
# RECIPIENT: a reader's value in tracked links and the pixel ("1a2b-" and 12 characters of MAC).
TOKEN_GROWTH = {tokens.UNSUBSCRIBE_URL: 200, tokens.MANAGE_URL: 200, tokens.EMAIL: 60, tokens.NAME: 40,
                tokens.FEEDBACK_URL: 120, tokens.RECIPIENT: 10}

SAFE_SCHEMES = {"http", "https", "mailto"}

# Features the default template uses on purpose as progressive enhancement: inline styles carry a complete
# light design, so a client without them still shows a readable email.
ENHANCEMENTS = {
    "css-at-media": "responsive tweaks; the layout is fluid without them",
    "css-at-media-prefers-color-scheme": "dark mode; other clients show the light theme",
    "css-color-scheme": "dark-mode hint",
    "css-important": "lets the dark and mobile rules override inline styles",
    "css-sytem-ui": "first font of a stack; the next ones take over",
}


# --- reading the HTML ------------------------------------------------------------------------------------


@dataclass
class _Page:
    links: list[tuple[str, str]] = field(default_factory=list)  # (href, link text)
    images: list[dict[str, str | None]] = field(default_factory=list)
    tables_without_role: int = 0
    inline_css: list[str] = field(default_factory=list)
    style_blocks: list[str] = field(default_factory=list)
    html_attrs: dict[str, str | None] = field(default_factory=dict)


class _Reader(HTMLParser):
    """Collects what the checks need. Conditional comments (<!--[if mso]>) are comments to this parser, so
    Outlook-only markup, which is written for Outlook on purpose, is not judged."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = _Page()
        self._in_style = False
        self._link: list[str] | None = None
        self._link_href = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("style"):
            self.page.inline_css.append(a["style"] or "")
        if tag == "html":
            self.page.html_attrs = a
        elif tag == "style":
            self._in_style = True
        elif tag == "a" and "href" in a:
            self._link, self._link_href = [], (a["href"] or "").strip()
        elif tag == "img":
            self.page.images.append(a)
        elif tag == "table" and a.get("role") != "presentation":
            self.page.tables_without_role += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag == "style":
            self._in_style = False
        elif tag == "a" and self._link is not None:
            self.page.links.append((self._link_href, " ".join("".join(self._link).split())))
            self._link = None

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.page.style_blocks.append(data)
        elif self._link is not None:
            self._link.append(data)


def read_html(html: str) -> _Page:
    reader = _Reader()
    reader.feed(html)
    reader.close()
    return reader.page


# --- CSS features ----------------------------------------------------------------------------------------


@cache
def caniemail() -> dict:
    return json.loads(resources.files("newsletter.render").joinpath("caniemail.json").read_text("utf-8"))


# Titles that are not a bare property name map to the properties they cover.
_PROPERTY_ALIASES = {
    "css-height": ["height"],
    "css-width": ["width"],
    "css-max-height": ["max-height"],
    "css-min-height": ["min-height"],
    "css-min-width": ["min-width"],
    "css-inline-size": ["inline-size"],
    "css-color-scheme": ["color-scheme"],
    "css-font": ["font"],
    "css-block-inline-size": ["block-size", "inline-size"],
    "css-gap": ["gap", "column-gap", "row-gap"],
    "css-left-right-top-bottom": ["left", "right", "top", "bottom"],
    "css-margin-block-start-end": ["margin-block-start", "margin-block-end"],
    "css-margin-inline-block": ["margin-inline", "margin-block"],
    "css-margin-inline-start-end": ["margin-inline-start", "margin-inline-end"],
    "css-padding-block-start-end": ["padding-block-start", "padding-block-end"],
    "css-padding-inline-block": ["padding-inline", "padding-block"],
    "css-padding-inline-start-end": ["padding-inline-start", "padding-inline-end"],
    "css-border-inline-block": ["border-inline", "border-block"],
    "css-border-inline-block-longhand": [
        "border-inline-start", "border-inline-end", "border-block-start", "border-block-end",
    ],
    "css-column-layout-properties": ["columns", "column-width", "column-rule", "column-span", "column-fill"],
    "css-grid-template": ["grid-template", "grid-template-columns", "grid-template-rows", "grid-template-areas"],
}
_VALUES = {
    "css-display-flex": ("display", "flex"),
    "css-display-grid": ("display", "grid"),
    "css-display-none": ("display", "none"),
    "css-flex-direction": ("flex-direction", "column"),
    "css-flex-wrap": ("flex-wrap", "wrap"),
}
_FUNCTIONS = {
    "css-function-clamp": "clamp(", "css-function-light-dark": "light-dark(", "css-function-max": "max(",
    "css-function-min": "min(", "css-linear-gradient": "linear-gradient(",
    "css-radial-gradient": "radial-gradient(", "css-conic-gradient": "conic-gradient(", "css-unit-calc": "calc(",
    "css-rgb": "rgb(", "css-rgba": "rgba(", "css-variables": "var(--",
}
_UNITS = {f"css-unit-{u}": u for u in ("rem", "vw", "vh", "vmin", "vmax", "ch", "ex", "cm", "mm", "in", "pc", "pt")}
_AT_RULES = {
    "css-at-font-face": "@font-face", "css-at-import": "@import", "css-at-keyframes": "@keyframes",
    "css-at-supports": "@supports", "css-at-media": "@media",
}
_MEDIA_FEATURES = {
    "css-at-media-prefers-color-scheme": "prefers-color-scheme",
    "css-at-media-prefers-reduced-motion": "prefers-reduced-motion",
    "css-at-media-orientation": "orientation",
    "css-at-media-hover": "hover",
    "css-at-media-device-pixel-ratio": "device-pixel-ratio",
}
_DECLARATION = re.compile(r"(?<![\w-])(-?[a-z][a-z-]*)\s*:\s*([^;{}]+)", re.I)
_COMMENT = re.compile(r"/\*.*?\*/", re.S)
_RULE = re.compile(r"([^{}@;]+)\{([^{}]*)\}")


def _declarations(css: str) -> Iterable[tuple[str, str]]:
    for name, value in _DECLARATION.findall(css):
        yield name.lower(), value.strip().lower()


def css_features(inline: Iterable[str], blocks: Iterable[str]) -> set[str]:
    """The caniemail feature slugs this CSS uses."""
    features = caniemail()["features"]
    by_property: dict[str, str] = {}
    for slug, feature in features.items():
        if re.fullmatch(r"[a-z-]+", feature["title"]):
            by_property[feature["title"]] = slug
    for slug, names in _PROPERTY_ALIASES.items():
        for name in names:
            by_property.setdefault(name, slug)

    used: set[str] = set()
    declarations: list[tuple[str, str]] = []
    for css in inline:
        declarations.extend(_declarations(css))
    sheet = _COMMENT.sub("", "\n".join(blocks))
    for _selector, body in _RULE.findall(sheet):
        declarations.extend(_declarations(body))
    selectors = " ".join(sel for sel, _ in _RULE.findall(sheet))

    for name, value in declarations:
        if name.startswith("--"):
            used.add("css-variables")
        if name in by_property:
            used.add(by_property[name])
        elif name.split("-")[0] in ("border", "margin", "padding"):  # longhands: border-left, margin-top...
            used.add(by_property[name.split("-")[0]])
        for slug, (prop, val) in _VALUES.items():
            if name == prop and value.split("!")[0].strip() == val:
                used.add(slug)
        for slug, fn in _FUNCTIONS.items():
            if re.search(r"(?<![\w-])" + re.escape(fn), value):
                used.add(slug)
        for slug, unit in _UNITS.items():
            if re.search(rf"\d{unit}\b", value):
                used.add(slug)
        if "!important" in value:
            used.add("css-important")
        if name == "font-family" and re.search(r"\b(system-ui|ui-sans-serif|ui-serif|ui-monospace)\b", value):
            used.add("css-sytem-ui")
    for slug, rule in _AT_RULES.items():
        if rule in sheet:
            used.add(slug)
    for media in re.findall(r"@media([^{]*)\{", sheet):
        for slug, feature in _MEDIA_FEATURES.items():
            if feature in media:
                used.add(slug)
    for pseudo in re.findall(r"(::?[a-z-]+)", selectors):
        kind = "element" if pseudo.startswith("::") else "class"
        slug = f"css-pseudo-{kind}-{pseudo.lstrip(':')}"
        if slug in features:
            used.add(slug)
    if "[" in selectors:
        used.add("css-selector-attribute")
    if ">" in selectors:
        used.add("css-selector-child")
    if "~" in selectors:
        used.add("css-selector-general-sibling")
    if re.search(r"\+\s*[.#\w]", selectors):
        used.add("css-selector-adjacent-sibling")
    return {slug for slug in used if slug in features}


# --- the checks ------------------------------------------------------------------------------------------


def _kb(n: int) -> str:
    return f"{n / KB:.1f} KB"


def check_size(report: Report, html: str) -> None:
    size = len(html.encode("utf-8"))
    filled = size + sum(html.count(token) * grow for token, grow in TOKEN_GROWTH.items())
    where = f"HTML is {_kb(size)} (about {_kb(filled)} once recipient links are filled)"
    if filled > CLIP_BYTES:
        report.add("fail", "size", f"{where}: Gmail clips messages over {_kb(CLIP_BYTES)}, hiding the rest "
                                   "and the unsubscribe link; drop stories or trim the template")
    elif filled > WARN_BYTES:
        report.add("warn", "size", f"{where}: close to Gmail's clipping point ({_kb(CLIP_BYTES)})")
    else:
        report.add("ok", "size", f"{where}, under Gmail's clipping point ({_kb(CLIP_BYTES)})")


def check_links(report: Report, page: _Page) -> None:
    bad = 0
    for href, text in page.links:
        if href in tokens.ALL.values() or href.startswith(tokens.FEEDBACK_URL + "/"):
            continue  # filled per recipient with an https URL
        scheme = urlparse(href).scheme.lower()
        if scheme in SAFE_SCHEMES and (scheme == "mailto" or urlparse(href).netloc):
            continue
        bad += 1
        label = f' ("{text[:40]}")' if text else ""
        if scheme in ("javascript", "vbscript", "data", "file"):
            why = "is blocked or dangerous in email"
        elif not scheme:
            why = "is relative: it has no site to point to in an inbox"
        else:
            why = "is not an http(s) or mailto link"
        report.add("fail", "link", f"link {href[:80]!r}{label} {why}")
    if not bad:
        report.add("ok", "link", f"all {len(page.links)} links are http(s) or mailto")


def check_images(report: Report, page: _Page) -> None:
    missing_alt = [img for img in page.images if img.get("alt") is None]
    no_width = [img for img in page.images if not img.get("width")]
    for img in missing_alt:
        report.add("fail", "img-alt", f"image {img.get('src')!r} has no alt text: screen readers and clients "
                                      "that block images show nothing")
    no_height = [img for img in page.images if not img.get("height")]
    for img in no_width:
        report.add("warn", "img-width", f"image {img.get('src')!r} has no width attribute: Outlook shows it at "
                                        "its natural size")
    for img in no_height:
        report.add("warn", "img-height", f"image {img.get('src')!r} has no height attribute (height=auto "
                                         "keeps the picture's own shape): some clients then size it oddly")
    if page.images and not (missing_alt or no_width or no_height):
        # alt="" is right for a decorative image (screen readers skip it); a link made of one is caught by the
        # link-text check (newsletter.render.accessibility).
        report.add("ok", "img", f"all {len(page.images)} images have alt text (empty if decorative), a width and "
                                "a height")
    if not page.images:
        report.add("ok", "img", "no images: nothing depends on images loading")


def check_unsubscribe(report: Report, rendered: Rendered, page: _Page, headers: Mapping[str, str] | None) -> None:
    token = tokens.UNSUBSCRIBE_URL
    if any(href == token or token in href for href, _ in page.links):
        report.add("ok", "unsubscribe-html", "the HTML part has a visible unsubscribe link")
    else:
        report.add("fail", "unsubscribe-html", f"the HTML part has no unsubscribe link (a link to {token}): "
                                               "required by law and by Gmail and Yahoo for bulk senders")
    if token in rendered.text:
        report.add("ok", "unsubscribe-text", "the text part has the unsubscribe link")
    else:
        report.add("fail", "unsubscribe-text", f"the text part has no unsubscribe link ({token})")
    if headers is None:
        return
    lower = {k.lower(): v for k, v in headers.items()}
    value = lower.get("list-unsubscribe", "")
    if not re.search(r"<(https?://|mailto:|%%)", value):
        report.add("fail", "list-unsubscribe", "no List-Unsubscribe header with a link: Gmail and Yahoo require "
                                               "it for bulk mail")
    elif re.search(r"<http://", value) and "mailto:" not in value:
        report.add("warn", "list-unsubscribe", f"List-Unsubscribe {value} is not https: one-click unsubscribe "
                                               "(RFC 8058) needs https; set NEWSLETTER_BASE_URL to your https site")
    elif lower.get("list-unsubscribe-post", "").replace(" ", "") != "List-Unsubscribe=One-Click":
        report.add("warn", "list-unsubscribe", "no 'List-Unsubscribe-Post: List-Unsubscribe=One-Click' header "
                                               "(RFC 8058 one-click unsubscribe)")
    else:
        report.add("ok", "list-unsubscribe", "List-Unsubscribe and one-click List-Unsubscribe-Post headers set")


def check_text(report: Report, rendered: Rendered) -> None:
    words = len(rendered.text.split())
    if not rendered.text.strip():
        report.add("fail", "text-part", "the plain-text part is empty")
    else:
        report.add("ok", "text-part", f"plain-text part present ({words} words)")


# Every MJML element the templates may use: the CSS the compiler writes for them is its own cross-client
# scaffolding (hidden preheader, image resets, Outlook fixes), tested by MJML's authors, so only CSS beyond it
# is reported.
_SCAFFOLD_MJML = """<mjml><mj-head><mj-preview>p</mj-preview></mj-head>
<mj-body background-color="#ffffff"><mj-section><mj-column><mj-text>t</mj-text>
<mj-image src="https://example.org/i.png" alt="i" /><mj-button href="https://example.org">b</mj-button><mj-divider />
<mj-spacer /><mj-table><tr><td>t</td></tr></mj-table></mj-column></mj-section>
<mj-section background-color="#ffffff" border-top="1px solid #000000" css-class="c"><mj-column>
<mj-text font-weight="700">t</mj-text></mj-column></mj-section>
<mj-wrapper background-color="#ffffff"><mj-section><mj-group><mj-column background-color="#ffffff"><mj-social>
<mj-social-element name="x" href="https://example.org">s</mj-social-element></mj-social></mj-column></mj-group>
</mj-section></mj-wrapper></mj-body></mjml>"""


def _signature(style: str) -> frozenset[str]:
    return frozenset(name for name, _ in _declarations(style))


@cache
def _scaffold(compiler: str) -> tuple[frozenset[frozenset[str]], frozenset[str]]:
    """The shapes of the inline styles (their property names) and the style blocks MJML writes itself."""
    from newsletter.render.engine import TemplateError, compile_mjml

    try:
        html, _ = compile_mjml(_SCAFFOLD_MJML, compiler=compiler if compiler in ("mrml", "mjml") else "auto")
    except TemplateError:
        return frozenset(), frozenset()
    page = read_html(html)
    return frozenset(_signature(s) for s in page.inline_css), frozenset(b.strip() for b in page.style_blocks)


def template_css(page: _Page, compiler: str) -> tuple[list[str], list[str]]:
    """The page's CSS minus MJML's scaffolding: what the template's author wrote."""
    shapes, blocks = _scaffold(compiler)
    inline = [css for css in page.inline_css if _signature(css) not in shapes]
    own_blocks = [
        b for b in page.style_blocks
        if b.strip() not in blocks and "mj-column-" not in b and "mj-outlook" not in b
    ]
    return inline, own_blocks


def check_css(report: Report, page: _Page, compiler: str = "auto") -> None:
    data = caniemail()
    clients = data["clients"]
    used = css_features(*template_css(page, compiler))
    enhancements = []
    flagged = 0
    for slug in sorted(used):
        feature = data["features"][slug]
        if not feature["unsupported"]:
            continue
        if slug in ENHANCEMENTS:
            enhancements.append(feature["title"])
            continue
        flagged += 1
        names = ", ".join(clients[c] for c in feature["unsupported"])
        report.add("warn", "css", f"{feature['title']} is not supported by {names} ({feature['url']})")
    if enhancements:
        report.add("ok", "css-enhancement", "used as progressive enhancement, ignored where unsupported: "
                                            + "; ".join(enhancements))
    if not flagged:
        report.add("ok", "css", f"the template's {len(used)} CSS features are supported by the major clients "
                                f"({data['source']}; MJML's own cross-client markup is not judged)")


GMAIL_STYLE_LIMIT = 16 * KB  # Gmail drops a <style> block larger than this, with all its rules


def check_style_size(report: Report, page: _Page) -> None:
    for block in page.style_blocks:
        size = len(block.encode("utf-8"))
        if size > GMAIL_STYLE_LIMIT:
            report.add("warn", "style-size", f"a <style> block is {_kb(size)}: Gmail ignores style blocks over "
                                             f"{_kb(GMAIL_STYLE_LIMIT)} (dark mode and mobile rules would be lost)")


def preflight(rendered: Rendered, *, headers: Mapping[str, str] | None = None) -> Report:
    """Check a rendered issue. `headers` are the message headers the mailer will send, when known (the
    List-Unsubscribe check needs them); without them the unsubscribe token is checked in both parts."""
    report = Report()
    page = read_html(rendered.html)
    check_size(report, rendered.html)
    check_unsubscribe(report, rendered, page, headers)
    check_text(report, rendered)
    check_links(report, page)
    check_images(report, page)
    check_css(report, page, rendered.compiler)
    check_style_size(report, page)
    check_accessibility(report, rendered.html)
    check_outlook(report, rendered.html)
    if not rendered.subject.strip():
        report.add("fail", "subject", "the subject is empty")
    return report
