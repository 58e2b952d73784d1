"""Render an issue once: Jinja2 fills the MJML template, MJML compiles it to HTML, a text template gives the
plain-text part. Per-recipient values stay as tokens (newsletter.render.tokens) for delivery to fill.

Templates are looked up in the user's folder first (NEWSLETTER_TEMPLATES_DIR, default ./templates), then in the
package's defaults, so overriding one file means copying one file.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment
from markdown_it import MarkdownIt
from markupsafe import escape

from newsletter.compose.issue import Issue, issue_to_json, link_domain
from newsletter.config import Newsletter
from newsletter.render import tokens
from newsletter.render.variant import DEFAULT, Variant
from newsletter.urls import issue_path, story_path

HTML_TEMPLATE = "digest.mjml.j2"
TEXT_TEMPLATE = "digest.txt.j2"


class TemplateError(Exception):
    """A template is broken; the message names the file and line."""


@dataclass(frozen=True)
class Rendered:
    subject: str
    preheader: str
    html: str
    text: str
    compiler: str
    seconds: float


def default_templates_dir() -> Path:
    """The shipped templates: inside an installed wheel, or the repository's templates/ in a checkout."""
    installed = Path(str(resources.files("newsletter"))) / "default_templates"
    if installed.is_dir():
        return installed
    return Path(__file__).resolve().parents[2] / "templates"


def _autoescape(name: str | None) -> bool:
    # The plain-text part must not be HTML-escaped; everything else is markup.
    return not (name or "").endswith((".txt.j2", ".txt"))


def make_environment(user_dir: Path | None) -> jinja2.Environment:
    search = [str(user_dir)] if user_dir and user_dir.is_dir() else []
    search.append(str(default_templates_dir()))
    # Sandboxed: a template override is text an operator may copy from anywhere, and in a plain Environment
    # `{{ cycler.__init__.__globals__.os }}` reaches the process (its environment, a shell). The sandbox
    # refuses private and internal attributes; rendering cost is measured in benchmarks/render.py.
    env = SandboxedEnvironment(
        loader=jinja2.FileSystemLoader(search),
        # MJML is XML: every text node is escaped, so a feed's "<" or "&" cannot break the strict MRML parser.
        autoescape=_autoescape,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["reltime"] = relative_time
    env.filters["domain"] = link_domain
    env.filters["markdown"] = _markdown
    env.filters["wrap"] = _wrap
    env.filters["text_ref"] = _text_ref
    env.filters["markdown_text"] = _markdown_text
    from newsletter.render.outlook import outlook_fonts

    env.filters["outlook_fonts"] = outlook_fonts
    return env


def _user_templates_key(user_dir: Path | None) -> tuple[str | None, tuple[tuple[str, int], ...]]:
    """The user's folder and its files' names and modification times: a file added or edited there means a
    fresh environment (Jinja's own reload check only watches the file a template was first loaded from)."""
    if not user_dir or not user_dir.is_dir():
        return None, ()
    files = tuple(sorted((str(p), p.stat().st_mtime_ns) for p in user_dir.rglob("*") if p.is_file()))
    return str(user_dir), files


@lru_cache(maxsize=8)
def _environment(user_dir: str | None, files: tuple[tuple[str, int], ...]) -> jinja2.Environment:
    # Compiling the templates costs ~20 ms, rendering them ~5: keep compiled templates between renders.
    return make_environment(Path(user_dir) if user_dir else None)


_md = MarkdownIt("commonmark", {"html": False, "linkify": False})  # editors' Markdown may not smuggle HTML


def _markdown(text: str | None, link_colour: str | None = None) -> str:
    """Editor's Markdown to HTML. `link_colour` is inlined on links: mail clients that drop <style> would
    otherwise show the browser's default blue."""
    from markupsafe import Markup

    html = _md.render(text or "")
    if link_colour:
        html = html.replace("<a href=", f'<a style="color:{escape(link_colour)}" href=')
    return Markup(html)


def _wrap(text: str, width: int = 72, indent: str = "", subsequent_indent: str | None = None) -> str:
    """Wrap each paragraph (line) of `text`; `subsequent_indent` hangs continuation lines (numbered lists)."""
    import textwrap

    paragraphs = str(text).strip("\n").split("\n")
    return "\n".join(
        "" if not p.strip() else textwrap.fill(
            p,
            width=width,
            initial_indent=indent,
            subsequent_indent=indent if subsequent_indent is None else subsequent_indent,
            break_long_words=False,
            break_on_hyphens=False,
        ).replace("\u00a0", " ")  # templates glue "title\u00a0[12]" so a reference never starts a line alone
        for p in paragraphs
    )


def _markdown_text(text: str | None, refs: LinkRefs) -> str:
    """The editor's Markdown as plain text: emphasis marks dropped, links turned into [n] references, a blank
    line between paragraphs, list items as "- " lines (wrapped later by `wrap`)."""
    out = ""
    depth = 0  # inside a list
    after_item = False  # list items follow each other without a blank line
    for block in _md.parse(text or ""):
        if block.type in ("bullet_list_open", "ordered_list_open"):
            depth += 1
        elif block.type in ("bullet_list_close", "ordered_list_close"):
            depth -= 1
        elif block.type == "inline":
            words: list[str] = []
            href: str | None = None
            for tok in block.children or []:
                if tok.type in ("text", "code_inline"):
                    words.append(tok.content)
                elif tok.type in ("softbreak", "hardbreak"):
                    words.append(" ")
                elif tok.type == "link_open":
                    href = str(tok.attrs.get("href", ""))
                elif tok.type == "link_close" and href:
                    words.append(f"\u00a0[{refs(href)}]")
                    href = None
            line = ("- " if depth else "") + "".join(words)
            if out:
                out += "\n" if depth and after_item else "\n\n"
            out += line
            after_item = bool(depth)
    return out


def _text_ref(link: dict[str, Any], refs: LinkRefs) -> str:
    """A link in the plain-text part: its name and reference number, e.g. `Harbour Times [12]`."""
    return f"{link.get('source') or link.get('title')}\u00a0[{refs(link['url'])}]"


def relative_time(value: datetime | str | None, now: datetime | None = None) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.rstrip("Z"))
    now = now or datetime.now(UTC).replace(tzinfo=None)
    seconds = (now - value).total_seconds()
    if seconds < 3600:
        return "just now" if seconds < 120 else f"{int(seconds // 60)}m ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)}h ago"
    days = int(seconds // 86400)
    # One format throughout ("18d ago", "5mo ago", "2y ago"), never a date beside an age in one issue.
    if days < 100:
        return f"{days}d ago"
    return f"{days // 30}mo ago" if days < 730 else f"{days // 365}y ago"


def _location(exc: jinja2.TemplateError) -> str:
    name = getattr(exc, "filename", None) or getattr(exc, "name", None) or "template"
    line = getattr(exc, "lineno", None)
    return f"{name}:{line}" if line else str(name)


def context_for(
    issue: Issue, newsletter: Newsletter, *, base_url: str, now: datetime | None = None,
    placeholders: dict[str, str] | None = None, comment_counts: dict[int, int] | None = None,
    variant: Variant = DEFAULT,
) -> dict[str, Any]:
    """The templates' variables; `placeholders` are the per-recipient tokens to place (tokens.render_tokens).
    `comment_counts` (issue_item id -> comments) are the counts at render time for the "Discuss" links.
    `variant`: the copy for readers who turned sections off (their stories are left out; every story keeps
    its address on the web edition, numbered as in the whole issue)."""
    own = placeholders or tokens.ALL
    data = issue_to_json(issue)
    now = now or datetime.now(UTC).replace(tzinfo=None)
    counts = comment_counts or {}
    for position, item in enumerate(data["items"], start=1):
        # Each story's page on the web edition, where readers discuss it (newsletter.urls: the one place).
        item["story_url"] = base_url + story_path(newsletter.slug, issue.number, position, item["title"])
        item["comments"] = counts.get(item["id"], 0)
        # The recipient's own signed "this summary is wrong" link for this story (newsletter.web.feedback).
        item["feedback_url"] = f"{own.get('feedback_url', tokens.FEEDBACK_URL)}/{issue.number}/{position}"
    hidden = 0
    if variant.sections_off:
        kept = [item for item in data["items"] if item.get("section") not in variant.sections_off]
        hidden = len(data["items"]) - len(kept)
        data["items"] = kept
    return {
        "issue": data,
        "items": data["items"],
        "newsletter": newsletter.model_dump(),
        "theme": newsletter.theme.model_dump(),
        "lang": newsletter.language,
        "dir": newsletter.direction,
        # Where a line starts and ends in the reading direction (alignment, the quote bar) for RTL newsletters.
        "start": "right" if newsletter.direction == "rtl" else "left",
        "end": "left" if newsletter.direction == "rtl" else "right",
        "issue_date": _long_date(issue.created_at or now),
        "preheader": issue.preheader or _default_preheader(data),
        "archive_url": f"{base_url}/archive/{newsletter.slug}",
        "issue_url": base_url + issue_path(newsletter.slug, issue.number),
        "unsubscribe_url": own["unsubscribe_url"],
        "manage_url": own.get("manage_url", tokens.MANAGE_URL),
        "recipient_email": own["email"],
        "hidden_stories": hidden,
        "now": now,
        "refs": LinkRefs(),
    }


def _long_date(value: datetime) -> str:
    return f"{value.day} {value:%B %Y}"  # "9 March 2026" (strftime's %-d is not portable)


class LinkRefs:
    """Numbered link references for the plain-text part: `{{ refs(url) }}` gives a URL its number (the same URL
    keeps its number) and `refs.items()` lists them at the end, so long URLs do not break the wrapped prose."""

    def __init__(self) -> None:
        self._numbers: dict[str, int] = {}

    def __call__(self, url: str) -> int:
        return self._numbers.setdefault(url, len(self._numbers) + 1)

    def items(self) -> list[tuple[int, str]]:
        return [(n, url) for url, n in self._numbers.items()]


def preheader_for(issue: Issue) -> str:
    """The inbox preview line: the editor's, or the first titles."""
    return issue.preheader or _default_preheader(issue_to_json(issue))


def _default_preheader(data: dict[str, Any]) -> str:
    titles = " · ".join(i["title"] for i in data["items"][:3])
    if len(titles) <= 140:
        return titles
    return titles[:140].rsplit(" ", 1)[0].rstrip(" ·") + "…"  # cut between words, not inside one


def render_template(env: jinja2.Environment, name: str, context: dict[str, Any]) -> str:
    try:
        return env.get_template(name).render(context)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"{_location(exc)}: {exc.message}") from None
    except jinja2.TemplateNotFound as exc:
        raise TemplateError(f"template not found: {exc.name}") from None
    except jinja2.TemplateError as exc:
        # Runtime errors (undefined variables...) carry the line in the traceback, not on the exception.
        raise TemplateError(f"{_runtime_location(exc, name)}: {exc.message or exc}") from None


def _runtime_location(exc: BaseException, fallback: str) -> str:
    tb = exc.__traceback__
    where = fallback
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.endswith((".j2", ".mjml", ".txt", ".html")):
            where = f"{Path(filename).name}:{tb.tb_lineno}"
        tb = tb.tb_next
    return where


def compile_mjml(source: str, *, compiler: str = "auto") -> tuple[str, str]:
    """MJML to HTML. MRML (Rust) by default; the pure-Python `mjml` package when MRML is missing or refuses.

    Returns (html, compiler name). Measured on a 10-story digest: MRML 2.4 ms, pure-Python mjml 64 ms.
    """
    errors: list[str] = []
    if compiler in ("auto", "mrml"):
        try:
            import mrml

            # No web fonts: MJML would otherwise link Google Fonts whenever the font stack names Roboto & co.
            options = mrml.RenderOptions(fonts={})
            return mrml.to_html(source, render_options=options).content, "mrml"
        except ImportError:
            errors.append("mrml is not installed")
        except Exception as exc:  # MRML raises OSError/ValueError with a parser message
            errors.append(f"mrml: {exc}")
            if compiler == "mrml":
                raise TemplateError(f"MJML does not compile: {exc}") from None
    try:
        import mjml

        result = mjml.mjml_to_html(source)
        if result.errors:
            raise TemplateError("MJML does not compile: " + "; ".join(map(str, result.errors)))
        return result.html, "mjml"
    except TemplateError:
        raise
    except Exception as exc:
        errors.append(f"mjml: {exc}")
    raise TemplateError("MJML does not compile: " + "; ".join(errors))


def render_issue(
    issue: Issue,
    newsletter: Newsletter,
    *,
    base_url: str,
    templates_dir: Path | None = None,
    compiler: str = "auto",
    now: datetime | None = None,
    comment_counts: dict[int, int] | None = None,
    variant: Variant = DEFAULT,
) -> Rendered:
    """`now` fixes the clock for relative ages ("3h ago"), for reproducible output; `comment_counts` are the
    stories' comment counts shown beside "Discuss" (none: "Be the first"). `variant`: sections left out, and
    for text-only readers no HTML at all (`html` is empty)."""
    started = time.perf_counter()
    env = _environment(*_user_templates_key(templates_dir))
    own = tokens.render_tokens()  # content cannot know them: only the templates place a per-recipient value
    context = context_for(issue, newsletter, base_url=base_url, now=now, placeholders=own,
                          comment_counts=comment_counts, variant=variant)
    html, used = "", "none"
    if variant.format != "text":
        mjml_source = render_template(env, HTML_TEMPLATE, context)
        html, used = compile_mjml(mjml_source, compiler=compiler)
        html = tokens.finish(html, own)
    text = tokens.finish(render_template(env, TEXT_TEMPLATE, context), own)
    return Rendered(
        subject=tokens.defuse(issue.subject),
        preheader=context["preheader"],
        html=html,
        text=text,
        compiler=used,
        seconds=time.perf_counter() - started,
    )
