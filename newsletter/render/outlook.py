"""Classic Outlook for Windows (the Word engine): what the email needs to hold its layout and type there, and the
preflight rule that the compiled HTML carries it.

Word ignores max-width and media queries, so the layout holds only through fixed-width "ghost" tables inside
`<!--[if mso]>` comments (MJML writes them for every section and column); it does not walk a font stack: when
the first font is one Windows lacks (system-ui, -apple-system) it shows Times New Roman, so the template gives
Outlook a stack of its own in a conditional <style> (`outlook_fonts`); and it scales images on high-DPI screens
unless told PixelsPerInch 96 (MJML writes that too).
"""

from __future__ import annotations

import re

from markupsafe import Markup

from newsletter.render.report import Report

# Fonts every Windows with Outlook has (Helvetica is mapped to Arial by Windows itself).
WINDOWS_FONTS = {
    "segoe ui", "arial", "helvetica", "verdana", "tahoma", "trebuchet ms", "calibri", "cambria", "candara",
    "georgia", "times new roman", "palatino linotype", "book antiqua", "courier new", "consolas", "lucida console",
    "garamond", "century gothic", "franklin gothic medium", "segoe ui semibold",
}
GENERIC = {"sans-serif": "Arial", "serif": "Georgia", "monospace": "'Courier New'"}

_CONDITIONAL = re.compile(r"<!--\[if [^\]]*mso[^\]]*\]>(.*?)<!\[endif\]-->", re.S | re.I)


def _names(stack: str) -> list[str]:
    return [name.strip().strip("'\"") for name in stack.split(",") if name.strip()]


def outlook_fonts(stack: str) -> Markup:
    """The theme's font stack as Outlook can use it: from its first font Windows has, with a generic family last.

    Markup: it goes into CSS, where an escaped quote (&#39;) is not read as one; the theme's font_family is
    validated to names, commas, spaces, dashes and quotes (newsletter.config.Theme), nothing that can end a rule."""
    names = _names(stack)
    generic = next((n for n in reversed(names) if n.lower() in GENERIC), "sans-serif")
    usable = [n for n in names if n.lower() in WINDOWS_FONTS]
    if not usable:
        usable = [GENERIC[generic.lower()].strip("'")]
    return Markup(", ".join([*(f"'{n}'" if " " in n else n for n in usable), generic]))


def first_font(stack: str) -> str:
    names = _names(stack)
    return names[0].lower() if names else ""


def check_outlook(report: Report, html: str) -> None:
    conditional = "\n".join(_CONDITIONAL.findall(html))
    widths = re.findall(r"<table[^>]*\bwidth=\"(\d+)\"", conditional)
    if widths:
        report.add("ok", "outlook-width", f"classic Outlook gets fixed-width tables ({max(map(int, widths))} px) "
                                          "in conditional comments")
    else:
        report.add("fail", "outlook-width", "no fixed-width tables in <!--[if mso]> comments: classic Outlook "
                                            "ignores max-width and stretches the email across the window (compile "
                                            "the template with MJML, or add ghost tables)")
    body_fonts = [m.group(1) for m in re.finditer(r"font-family:\s*([^;\"]+)", _CONDITIONAL.sub("", html))]
    needs = [f for f in body_fonts if first_font(f.replace("&#39;", "'")) not in WINDOWS_FONTS]
    mso_fonts = re.findall(r"font-family:\s*([^;}]+)", "".join(re.findall(r"<style[^>]*>(.*?)</style>", conditional,
                                                                         re.S)))
    if needs and not any(first_font(f) in WINDOWS_FONTS for f in mso_fonts):
        report.add("warn", "outlook-font", f"the font stack starts with {first_font(needs[0])!r}, which Windows "
                                           "lacks, and no <!--[if mso]> style gives Outlook another: it shows "
                                           "Times New Roman")
    else:
        report.add("ok", "outlook-font", "classic Outlook gets fonts it has" +
                   (f" ({mso_fonts[0].replace('!important', '').strip()})" if mso_fonts and needs else ""))
    if "PixelsPerInch>96" not in conditional:
        report.add("warn", "outlook-dpi", "no <o:PixelsPerInch>96</o:PixelsPerInch> for Outlook: on high-DPI "
                                          "Windows screens it scales images and widths out of proportion")
