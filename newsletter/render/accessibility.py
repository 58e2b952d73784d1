"""The accessibility checks of the preflight, after the Email Markup Consortium's criteria: what a screen reader,
a reader with low vision or a small phone makes of the rendered HTML.

Serious (fail): no `lang` (or `dir` missing for a right-to-left language), layout tables a screen reader reads
out as data tables, a link with no text to read, text whose contrast is under WCAG AA (4.5:1, large text 3:1)
in the light or the dark theme. The rest (warn): no `dir`, headings out of order, link text that does not say
where it goes ("here", "read more"), text under 13 px on a phone (iOS enlarges it, other clients do not).

Contrast and sizes are computed from the CSS as a client applies it: inline styles, the <style> rules (by
specificity and order, !important above inline), the dark-mode rules of `@media (prefers-color-scheme: dark)`
for the dark theme and the `@media (max-width: ...)` rules for a phone; colours and sizes inherit, the
background is the nearest one painted. Markup inside Outlook's conditional comments is Outlook's alone and is
not read (lxml keeps comments as comments). Hidden text (the preheader) is skipped.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import lxml.html
from cssselect import SelectorError, parse
from lxml.etree import _Comment, _Element

from newsletter.render.report import Report

AA_NORMAL, AA_LARGE = 4.5, 3.0
MIN_MOBILE_PX = 13.0
PHONE_WIDTH = 375  # px: the @media (max-width: N) rules with N >= this apply on a phone
RTL_LANGUAGES = {"ar", "arc", "ckb", "dv", "fa", "ha", "he", "iw", "khw", "ks", "ps", "sd", "ug", "ur", "yi"}
VAGUE = {"here", "click here", "click", "read more", "more", "learn more", "link", "this", "this link", "go",
         "continue", "continue reading", "details", "more info", "info", "see more", "tap here", "read"}
INHERITED = ("color", "font-size", "font-weight")

NAMED = {"white": "#ffffff", "black": "#000000", "red": "#ff0000", "blue": "#0000ff", "green": "#008000",
         "gray": "#808080", "grey": "#808080", "silver": "#c0c0c0", "yellow": "#ffff00", "navy": "#000080",
         "orange": "#ffa500", "purple": "#800080", "maroon": "#800000", "teal": "#008080"}


# --- colours -------------------------------------------------------------------------------------------------

RGBA = tuple[float, float, float, float]


def parse_colour(value: str) -> RGBA | None:
    value = value.strip().lower().replace("!important", "").strip()
    value = NAMED.get(value, value)
    if value == "transparent":
        return (0, 0, 0, 0)
    match = re.fullmatch(r"#([0-9a-f]{3}|[0-9a-f]{6}|[0-9a-f]{8})", value)
    if match:
        h = match.group(1)
        if len(h) == 3:
            h = "".join(c * 2 for c in h)
        alpha = int(h[6:8], 16) / 255 if len(h) == 8 else 1.0
        return (int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16), alpha)
    match = re.fullmatch(r"rgba?\(\s*([\d.]+)[\s,]+([\d.]+)[\s,]+([\d.]+)(?:[\s,/]+([\d.]+%?))?\s*\)", value)
    if match:
        alpha_text = match.group(4)
        alpha = 1.0 if alpha_text is None else (
            float(alpha_text[:-1]) / 100 if alpha_text.endswith("%") else float(alpha_text))
        return (float(match.group(1)), float(match.group(2)), float(match.group(3)), alpha)
    return None


def _over(top: RGBA, bottom: RGBA) -> RGBA:
    a = top[3]
    return (top[0] * a + bottom[0] * (1 - a), top[1] * a + bottom[1] * (1 - a), top[2] * a + bottom[2] * (1 - a), 1)


def luminance(c: RGBA) -> float:
    def channel(v: float) -> float:
        v /= 255
        return v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4

    return 0.2126 * channel(c[0]) + 0.7152 * channel(c[1]) + 0.0722 * channel(c[2])


def contrast(fg: RGBA, bg: RGBA) -> float:
    """WCAG 2 contrast ratio, 1 to 21."""
    a, b = luminance(_over(fg, bg)), luminance(bg)
    return (max(a, b) + 0.05) / (min(a, b) + 0.05)


def hex_of(c: RGBA) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(round(v) for v in c[:3]))


# --- the stylesheet ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    selector: str
    specificity: tuple[int, int, int]
    order: int
    declarations: tuple[tuple[str, str, bool], ...]  # (property, value, important)


def declarations(css: str) -> list[tuple[str, str, bool]]:
    out = []
    for part in css.split(";"):
        name, sep, value = part.partition(":")
        if not sep:
            continue
        important = "!important" in value.lower()
        value = re.sub(r"!\s*important", "", value, flags=re.I).strip()
        out.append((name.strip().lower(), value, important))
    return out


def _blocks(css: str) -> Iterator[tuple[str, str]]:
    """(media condition or "", rules text) for the top level and each @media block."""
    css = re.sub(r"/\*.*?\*/", "", css, flags=re.S)
    i, top = 0, []
    while i < len(css):
        at = css.find("@media", i)
        if at < 0:
            top.append(css[i:])
            break
        top.append(css[i:at])
        brace = css.find("{", at)
        if brace < 0:
            break
        depth, j = 1, brace + 1
        while j < len(css) and depth:
            depth += {"{": 1, "}": -1}.get(css[j], 0)
            j += 1
        yield css[at + 6:brace].strip().lower(), css[brace + 1:j - 1]
        i = j
    yield "", "".join(top)


def _applies(media: str, mode: str) -> bool:
    if not media:
        return True
    if "prefers-color-scheme" in media:
        return mode == "dark" and "dark" in media
    widths = re.findall(r"max-width\s*:\s*(\d+)px", media)
    minimum = re.findall(r"min-width\s*:\s*(\d+)px", media)
    if mode == "mobile":
        return bool(widths) and all(int(w) >= PHONE_WIDTH for w in widths) and \
            all(int(m) <= PHONE_WIDTH for m in minimum)
    return not widths  # desktop (light, dark): min-width rules apply, phone rules do not


def rules(sheets: list[str], mode: str) -> list[Rule]:
    out: list[Rule] = []
    for sheet in sheets:
        for media, body in _blocks(sheet):
            if not _applies(media, mode):
                continue
            for selectors, decls in re.findall(r"([^{}]+)\{([^{}]*)\}", body):
                found = tuple(declarations(decls))
                for selector in selectors.split(","):
                    selector = selector.strip()
                    try:
                        parsed = parse(selector)
                    except SelectorError:
                        continue
                    if not parsed:
                        continue
                    if parsed[0].pseudo_element:
                        continue
                    spec = parsed[0].specificity()
                    out.append(Rule(selector, spec, len(out), found))
    return out


# --- computing the style of each element ----------------------------------------------------------------------


Priority = tuple[int, int, tuple[int, int, int], int]


def computed(doc: _Element, mode: str, sheets: list[str]) -> dict[_Element, dict[str, str]]:
    """Each element's own declared values (not inherited yet) for the mode: light, dark or mobile."""
    chosen: dict[_Element, dict[str, tuple[Priority, str]]] = {}

    def offer(el: _Element, prop: str, value: str, priority: Priority) -> None:
        if prop == "background":
            prop = "background-color"  # the shorthand sets the colour too (to transparent when it names none)
        props = chosen.setdefault(el, {})
        if prop not in props or priority >= props[prop][0]:
            props[prop] = (priority, value)

    for el in doc.iter():
        if isinstance(el, _Comment) or not isinstance(el.tag, str):
            continue
        bgcolor = el.get("bgcolor")
        if bgcolor:
            offer(el, "background-color", bgcolor, (0, 0, (0, 0, 0), -1))
        for prop, value, important in declarations(el.get("style") or ""):
            offer(el, prop, value, (int(important), 1, (0, 0, 0), 0))
    for rule in rules(sheets, mode):
        try:
            matched = doc.cssselect(rule.selector)
        except (SelectorError, Exception):  # noqa: BLE001 - cssselect raises several kinds on exotic selectors
            continue
        for el in matched:
            for prop, value, important in rule.declarations:
                offer(el, prop, value, (int(important), 0, rule.specificity, rule.order))
    return {el: {p: v for p, (_, v) in props.items()} for el, props in chosen.items()}


def _background(decl: dict[str, str]) -> RGBA | None:
    value = decl.get("background-color")
    if not value:
        return None
    for token in re.findall(r"#[0-9a-fA-F]{3,8}\b|rgba?\([^)]*\)|\b[a-z]+\b", value):
        colour = parse_colour(token)
        if colour is not None:
            return colour
    return (0, 0, 0, 0)  # an image or a gradient alone: what is below shows through, as far as we can tell


def _px(value: str, parent: float) -> float | None:
    match = re.fullmatch(r"\s*([\d.]+)\s*(px|pt|em|rem|%)?\s*", value.lower())
    if not match:
        return None
    number, unit = float(match.group(1)), match.group(2) or "px"
    return {"px": number, "pt": number * 4 / 3, "em": number * parent, "rem": number * 16,
            "%": number * parent / 100}[unit]


def _hidden(decl: dict[str, str]) -> bool:
    display = decl.get("display", "").lower()
    return (display == "none" or decl.get("mso-hide", "").lower() == "all"
            or decl.get("visibility", "").lower() == "hidden" or decl.get("opacity", "").strip() in ("0", "0.0")
            or decl.get("max-height", "").strip() in ("0", "0px"))


@dataclass
class TextRun:
    text: str
    colour: RGBA | None
    background: RGBA
    size: float
    bold: bool
    tag: str

    @property
    def large(self) -> bool:
        return self.size >= 24 or (self.size >= 18.66 and self.bold)


def text_runs(doc: _Element, mode: str, sheets: list[str]) -> list[TextRun]:
    """Every visible piece of text with the colour, background and size it is shown in."""
    styles = computed(doc, mode, sheets)
    runs: list[TextRun] = []
    body = doc.find("body")
    root = body if body is not None else doc

    def walk(el: _Element, colour: RGBA | None, bg: RGBA, size: float, weight: str) -> None:
        decl = styles.get(el, {})
        if _hidden(decl):
            return
        if "color" in decl:
            colour = parse_colour(decl["color"]) or colour
        painted = _background(decl)
        if painted is not None and painted[3] > 0:
            bg = _over(painted, bg)
        if "font-size" in decl:
            size = _px(decl["font-size"], size) or size
        weight = decl.get("font-weight", weight)
        bold = weight.strip().lower() in ("bold", "bolder") or (weight.strip().isdigit() and int(weight) >= 600)
        if el.tag in ("h1", "h2", "h3", "b", "strong", "th") and "font-weight" not in decl:
            bold = True
        own = [el.text or ""] + [child.tail or "" for child in el]
        text = " ".join(" ".join(own).split())
        if text and el.tag not in ("style", "script", "title"):
            runs.append(TextRun(text, colour, bg, size, bold, str(el.tag)))
        for child in el:
            if isinstance(child.tag, str):
                walk(child, colour, bg, size, "700" if bold else weight)

    walk(root, (0, 0, 0, 1), (255, 255, 255, 1), 16.0, "400")
    return runs


# --- the checks ----------------------------------------------------------------------------------------------


def _document(html: str) -> _Element:
    return lxml.html.document_fromstring(html)


def _style_sheets(doc: _Element) -> list[str]:
    return [s.text or "" for s in doc.iter("style")]


def check_language(report: Report, doc: _Element) -> None:
    lang, direction = doc.get("lang"), doc.get("dir")
    if not lang:
        report.add("fail", "lang", "no lang attribute on <html>: screen readers read the email in their own "
                                   "language's voice (set `language` in the schedule)")
        return
    primary = lang.split("-")[0].lower()
    if primary in RTL_LANGUAGES and (direction or "").lower() != "rtl":
        report.add("fail", "dir", f"lang={lang!r} is written right to left but <html> has dir="
                                  f"{direction or 'none'!r}: set `direction = \"rtl\"` in the schedule")
    elif not direction:
        report.add("warn", "dir", "no dir attribute on <html>: set it (ltr or rtl) so clients lay text out the "
                                  "right way")
    else:
        report.add("ok", "lang", f"document language {lang!r}, direction {direction!r}")


def check_tables(report: Report, doc: _Element) -> None:
    layout = [t for t in doc.iter("table")
              if (t.get("role") or "").lower() not in ("presentation", "none")
              and not t.findall(".//th") and t.find("caption") is None]
    if layout:
        report.add("fail", "table-role", f"{len(layout)} layout table(s) without role=\"presentation\": screen "
                                         "readers announce rows and columns that mean nothing")


def check_headings(report: Report, doc: _Element) -> None:
    levels = [int(str(el.tag)[1]) for el in doc.iter("h1", "h2", "h3", "h4", "h5", "h6")]
    if not levels:
        report.add("warn", "headings", "no headings: screen reader users jump from heading to heading; make "
                                       "the newsletter's name an <h1> and each story title an <h2>")
        return
    problems = []
    if levels[0] != 1:
        problems.append(f"the first heading is an <h{levels[0]}>, not an <h1>")
    for before, after in zip(levels, levels[1:], strict=False):
        if after > before + 1:
            problems.append(f"<h{before}> is followed by <h{after}> (a level skipped)")
            break
    if problems:
        report.add("warn", "headings", "; ".join(problems))
    else:
        report.add("ok", "headings", f"{len(levels)} headings in order")


def _link_name(link: _Element) -> str:
    label = link.get("aria-label") or link.get("title") or ""
    parts = ["".join(link.itertext())] + [img.get("alt") or "" for img in link.iter("img")]
    return " ".join(" ".join([label, *parts]).split())


def check_link_text(report: Report, doc: _Element) -> None:
    empty, vague = [], []
    for link in doc.iter("a"):
        if link.get("href") is None:
            continue
        name = _link_name(link)
        if not name:
            empty.append(link.get("href") or "")
        elif re.sub(r"[^\w\s]", "", name.lower()).strip() in VAGUE:
            vague.append((name, link.get("href") or ""))
    for href in empty:
        report.add("fail", "link-text", f"link to {href[:80]!r} has no text (nor alt text on its image): a screen "
                                        "reader reads out the address, or nothing")
    for name, href in vague:
        report.add("warn", "link-text", f"link text {name!r} (to {href[:60]!r}) does not say where it goes: screen "
                                        "reader users listing the links hear only that; name the destination")
    if not empty and not vague:
        report.add("ok", "link-text", "every link's text says where it goes")


def check_contrast(report: Report, doc: _Element) -> None:
    sheets = _style_sheets(doc)
    dark_rules = any(m and "prefers-color-scheme" in m and "dark" in m
                     for sheet in sheets for m, _ in _blocks(sheet))
    modes = ["light", "dark"] if dark_rules else ["light"]
    for mode in modes:
        worst: dict[tuple[str, str, bool], tuple[float, str]] = {}
        for run in text_runs(doc, mode, sheets):
            if run.colour is None:
                continue
            ratio = contrast(run.colour, run.background)
            needed = AA_LARGE if run.large else AA_NORMAL
            if ratio < needed:
                key = (hex_of(_over(run.colour, run.background)), hex_of(run.background), run.large)
                if key not in worst:
                    worst[key] = (ratio, run.text[:50])
        for (fg, bg, large), (ratio, text) in sorted(worst.items(), key=lambda kv: kv[1][0]):
            needed = AA_LARGE if large else AA_NORMAL
            report.add("fail", "contrast", f"{mode} theme: text {fg} on {bg} has a contrast of {ratio:.2f}:1, under "
                                           f"WCAG AA's {needed}:1 for {'large' if large else 'body'} text "
                                           f"(e.g. {text!r}): change the theme's colours")
        if not worst:
            report.add("ok", "contrast", f"{mode} theme: all text meets WCAG AA contrast (4.5:1, large text 3:1)")


def check_font_size(report: Report, doc: _Element) -> None:
    small: dict[float, str] = {}
    for run in text_runs(doc, "mobile", _style_sheets(doc)):
        if run.size < MIN_MOBILE_PX:
            small.setdefault(round(run.size, 1), run.text[:40])
    for size, text in sorted(small.items()):
        report.add("warn", "font-size", f"text at {size:g}px on a phone (e.g. {text!r}): under {MIN_MOBILE_PX:g}px "
                                        "it is hard to read; iOS enlarges it and breaks the layout, other clients "
                                        "leave it small. Raise it in a @media (max-width: 480px) rule")
    if not small:
        report.add("ok", "font-size", f"all text is at least {MIN_MOBILE_PX:g}px on a phone")


def check_accessibility(report: Report, html: str) -> None:
    doc = _document(html)
    check_language(report, doc)
    check_tables(report, doc)
    check_headings(report, doc)
    check_link_text(report, doc)
    check_contrast(report, doc)
    check_font_size(report, doc)
