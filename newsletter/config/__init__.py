"""Settings: one TOML file per newsletter in `schedules/`, machine choices and secrets from the environment.

Errors name the file and the field (`schedules/ai.toml: sources[2].url: not a URL`) because an operator
fixing a schedule at 7am should not have to guess.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlparse

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

# The environment's settings live in a module of their own, without pydantic, so that a command that needs only
# them (`newsletter issue list`) starts fast; they are part of this package's interface all the same.
from newsletter.settings import (  # noqa: F401 - re-exported
    ALLOW_ENV,
    Allow,
    AllowListError,
    ConfigError,
    IPNetwork,
    Settings,
    normal_host,
    redact_url,
    settings_from_env,
)

SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
EMAIL_RE = re.compile(r"^[^@\s<>\"']+@[^@\s<>\"']+\.[^@\s<>\"']+$")


def _check_source_url(value: str) -> str:
    value = value.strip()
    parsed = urlparse(value)
    if parsed.scheme in ("http", "https") and parsed.netloc:
        return value
    if parsed.scheme == "file" or (not parsed.scheme and value):
        return value  # local files are fine: tests, archives, feeds written by other tools
    raise ValueError("not a URL")


def _check_http_url(value: str) -> str:
    parsed = urlparse(value)
    if parsed.scheme in ("http", "https") and parsed.netloc:
        return value.rstrip("/")
    raise ValueError("not an http(s) URL")


def _check_address(value: str) -> str:
    from email.utils import parseaddr

    _, addr = parseaddr(value)
    if not addr or not EMAIL_RE.match(addr):
        raise ValueError("not an email address")
    return value


SourceURL = Annotated[str, AfterValidator(_check_source_url)]
HttpURL = Annotated[str, AfterValidator(_check_http_url)]
Address = Annotated[str, AfterValidator(_check_address)]


class Strict(BaseModel):
    # A typo in a schedule ("max_itmes") should be an error, not a silently ignored setting.
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_section(value: str) -> str:
    value = " ".join(value.split())
    if not value:
        raise ValueError("a section needs a name (e.g. \"Security\")")
    if len(value) > 60:
        raise ValueError("a section name is at most 60 characters")
    return value


SectionName = Annotated[str, AfterValidator(_check_section)]


class Source(Strict):
    url: SourceURL
    name: str | None = None
    max_items: int | None = Field(default=None, ge=1)
    # The named group of the issue its stories go in ("AI", "Security"); readers may turn a section off.
    section: SectionName | None = None


class Digest(Strict):
    window_days: int = Field(default=7, ge=1, le=366)
    max_items: int = Field(default=12, ge=1, le=200)
    max_per_source: int = Field(default=4, ge=1)
    subject: str = "{name} #{number}: {top_title}"
    intro: str | None = None
    summary_sentences: int = Field(default=3, ge=1, le=10)
    summary_words: int = Field(default=80, ge=10, le=400)
    fetch_articles_under_words: int = Field(default=150, ge=0)
    quotes: int = Field(default=3, ge=0, le=10)
    related: int = Field(default=3, ge=0, le=20)  # links per story, at most
    related_total: int = Field(default=10, ge=0, le=200)  # links per issue: the closest ones are kept
    # How related reading judges a candidate: "bm25" (TF-IDF cosine, the base install) or "semantic" (sentence
    # embeddings; needs the `semantic` extra). See newsletter/editorial/related.py for the figures.
    related_method: Literal["bm25", "semantic"] = "bm25"


class Schedule(Strict):
    # The name readers see for this cadence when the file offers others (`[[cadences]]`); default: the first
    # word of `send` when it is daily/weekly/weekdays/monthly, else "regular".
    name: str | None = None
    collect: str = "every 1 hour"
    send: str = "weekly on monday at 08:00"
    timezone: str = "UTC"
    approval: str = "auto"
    when_empty: Literal["skip", "send"] = "skip"
    build_ahead: str = "24 hours"  # with approval = "required": the draft is built this long before the send

    @field_validator("collect", "send")
    @classmethod
    def _cadence(cls, value: str) -> str:
        from newsletter.config.cadence import parse_cadence

        parse_cadence(value)  # raises with an example of what works
        return value

    @field_validator("build_ahead")
    @classmethod
    def _ahead(cls, value: str) -> str:
        from newsletter.config.cadence import parse_duration

        parse_duration(value)
        return value

    @model_validator(mode="after")
    def _draft_before_send(self) -> Schedule:
        from newsletter.config.cadence import check_build_ahead

        check_build_ahead(self.send, self.timezone, self.approval, self.build_ahead)
        return self

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {value!r} (use an IANA name such as Europe/Paris)") from exc
        return value

    @field_validator("approval")
    @classmethod
    def _approval(cls, value: str) -> str:
        value = " ".join(value.lower().split())
        if value in ("auto", "required") or re.fullmatch(r"auto after \d+ hours?", value):
            return value
        raise ValueError("must be 'auto', 'required' or 'auto after N hours'")


CADENCE_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")


def _cadence_name(value: str) -> str:
    value = value.strip().lower()
    if not CADENCE_NAME_RE.match(value):
        raise ValueError("use lowercase letters, digits and dashes (e.g. 'daily')")
    return value


class CadenceOption(Strict):
    """`[[cadences]]`: another cadence readers may pick (the `[schedule]` one is the first, and the default).

    It builds its own issues (numbered on their own, archived at /archive/SLUG-NAME) from the same collected
    items, each covering its own period (`window_days`, default: the time between two of its sends), with its
    own approval policy; its audience is the readers of this newsletter who chose it."""

    name: Annotated[str, AfterValidator(_cadence_name)]
    send: str
    approval: str = "auto"
    build_ahead: str = "24 hours"
    when_empty: Literal["skip", "send"] = "skip"
    window_days: int | None = Field(default=None, ge=1, le=366)
    max_items: int | None = Field(default=None, ge=1, le=200)

    @field_validator("send")
    @classmethod
    def _cadence(cls, value: str) -> str:
        from newsletter.config.cadence import parse_cadence

        parse_cadence(value)
        return value

    @field_validator("approval")
    @classmethod
    def _approval(cls, value: str) -> str:
        return Schedule._approval(value)


def _check_colour(value: str) -> str:
    if re.fullmatch(r"#(?:[0-9a-fA-F]{3}){1,2}", value.strip()):
        return value.strip()
    raise ValueError("not a colour: use #rgb or #rrggbb (e.g. #c2410c)")


def _check_font_family(value: str) -> str:
    if re.fullmatch(r"[\w\s,'-]+", value):
        return value
    raise ValueError("use font names separated by commas, quoted with ' when they have spaces")


Colour = Annotated[str, AfterValidator(_check_colour)]


class Theme(Strict):
    """Colours, fonts and logo of the digest email. Colours are #rgb or #rrggbb (they go into inline CSS and
    the dark-mode stylesheet, so anything else could break the markup). The `dark_*` colours apply in mail
    clients that honour prefers-color-scheme. Default contrast, light / dark: text 17.7:1 / 16:1, muted text
    7.7:1 / 6.9:1, links 5.2:1 / 10:1 (WCAG AA asks 4.5:1)."""

    accent: Colour = "#c2410c"
    background: Colour = "#f4f4f5"
    surface: Colour = "#ffffff"
    text: Colour = "#18181b"
    muted: Colour = "#52525b"
    border: Colour = "#e4e4e7"
    dark_accent: Colour = "#fdba74"
    dark_background: Colour = "#09090b"
    dark_surface: Colour = "#18181b"
    dark_text: Colour = "#f4f4f5"
    dark_muted: Colour = "#a1a1aa"
    dark_border: Colour = "#3f3f46"
    # system-ui is Roboto on Android: naming Roboto here would make MJML link Google Fonts into every email.
    font_family: Annotated[str, AfterValidator(_check_font_family)] = (
        "system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif"
    )
    logo_url: HttpURL | None = None
    logo_alt: str | None = None
    logo_width: int = Field(default=48, ge=8, le=600)


class Summarizer(Strict):
    endpoint: HttpURL
    model: str
    api_key_env: str | None = None
    prompt: str = (
        "Summarize this news article in {sentences} sentences and at most {words} words. "
        "Reply with the summary only.\n\nTitle: {title}\n\n{text}"
    )
    timeout: float = Field(default=20.0, gt=0)


class Comments(Strict):
    """`[comments]`: who may sign in by email link and comment on the story pages of this newsletter.

    who: "subscribers" (an active subscriber of this newsletter), "signed-in" (anyone who signs in by email
    link) or "off". premoderate: new comments wait for an editor's approval. edit_minutes: how long a reader may
    edit or delete their own comment."""

    who: Literal["subscribers", "signed-in", "off"] = "subscribers"
    premoderate: bool = False
    edit_minutes: int = Field(default=15, ge=0, le=7 * 24 * 60)


OTHER_SECTION = "Other"  # the stories of sources without a section, in a newsletter that has sections


class Tracking(Strict):
    """`[tracking]`: what is recorded about readers after a send (README "Tracking and reports"). Off by default.

    clicks: story and related links go through a signed redirect on `newsletter serve` (/r/...). opens: a 1x1
    image per reader (machine opens are counted apart). The guard holds the newsletter's scheduled sends when a
    sent issue's complaint rate passes `hold_complaint_rate` (Gmail's 0.3% line) or its bounce rate passes
    `hold_bounce_rate`, until an editor releases them."""

    clicks: bool = False
    opens: bool = False
    hold_complaint_rate: float = Field(default=0.003, gt=0, le=1)
    hold_bounce_rate: float = Field(default=0.05, gt=0, le=1)
    min_delivered: int = Field(default=100, ge=1)  # the guard judges rates over at least this many deliveries


class Newsletter(Strict):
    """One newsletter, as its schedule file describes it."""

    name: str = Field(min_length=1)
    slug: str
    from_address: Address
    reply_to: Address | None = None
    description: str = ""
    language: str = "en"
    direction: Literal["ltr", "rtl"] = "ltr"
    postal_address: str = ""
    sources: list[Source] = Field(min_length=1)
    digest: Digest = Digest()
    # A factory: building the default at import would load the cadence grammar (APScheduler) on every command.
    schedule: Schedule = Field(default_factory=Schedule)
    theme: Theme = Theme()
    summarizer: Summarizer | None = None
    comments: Comments = Comments()
    cadences: list[CadenceOption] = Field(default_factory=list)
    tracking: Tracking = Tracking()
    path: str | None = Field(default=None, exclude=True)
    # Set on the newsletter a `[[cadences]]` entry makes (`for_cadence`): whose readers it goes to.
    _audience_slug: str | None = PrivateAttr(default=None)
    _cadence: str | None = PrivateAttr(default=None)
    _cadence_names: list[str] = PrivateAttr(default_factory=list)

    @property
    def main_cadence(self) -> str:
        if self.schedule.name:
            return _cadence_name(self.schedule.name)
        first = self.schedule.send.strip().lower().split()[0] if self.schedule.send.strip() else ""
        return first if first in ("daily", "weekly", "weekdays", "monthly") else "regular"

    @property
    def cadence_names(self) -> list[str]:
        """The cadences readers pick between, the default first; empty when the newsletter has one."""
        if self._cadence_names:
            return list(self._cadence_names)
        return [self.main_cadence, *(c.name for c in self.cadences)] if self.cadences else []

    @property
    def cadence(self) -> str | None:
        """This newsletter's cadence among those its readers pick from (None: it offers just one)."""
        return self._cadence or (self.main_cadence if self.cadences else None)

    @property
    def audience_slug(self) -> str:
        """The newsletter whose subscribers this one's issues go to (its own slug, but for a cadence)."""
        return self._audience_slug or self.slug

    def for_cadence(self, name: str) -> Newsletter:
        """The newsletter one of the `[[cadences]]` makes: its own slug (SLUG-NAME), schedule and window, this
        newsletter's sources, settings and readers (those who chose it)."""
        from datetime import timedelta
        from zoneinfo import ZoneInfo

        from newsletter.config.cadence import shortest_gap

        option = next(c for c in self.cadences if c.name == name)
        days = option.window_days or max(1, min(366, round(
            shortest_gap(option.send, ZoneInfo(self.schedule.timezone)) / timedelta(days=1))))
        digest = self.digest.model_copy(update={"window_days": days,
                                                **({"max_items": option.max_items} if option.max_items else {})})
        schedule = self.schedule.model_copy(update={
            "name": option.name, "send": option.send, "approval": option.approval,
            "build_ahead": option.build_ahead, "when_empty": option.when_empty})
        derived = self.model_copy(update={"slug": f"{self.slug}-{option.name}",
                                          "name": f"{self.name} ({option.name})", "digest": digest,
                                          "schedule": schedule, "cadences": []})
        derived._audience_slug, derived._cadence = self.slug, option.name
        derived._cadence_names = self.cadence_names
        return derived

    @field_validator("slug")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not SLUG_RE.match(value):
            raise ValueError("use lowercase letters, digits and dashes (e.g. 'ai-weekly')")
        return value

    @property
    def sections(self) -> list[str]:
        """The section names, in the order the schedule file first names them (empty: no sections)."""
        return list(dict.fromkeys(s.section for s in self.sources if s.section))

    def section_of(self, source_url: str) -> str | None:
        """The section of a source's stories; a source without one (in a file that has sections) is "Other"."""
        for source in self.sources:
            if source.url == source_url:
                return source.section or (OTHER_SECTION if self.sections else None)
        return OTHER_SECTION if self.sections else None

    @model_validator(mode="after")
    def _unique_sources(self) -> Newsletter:
        seen: set[str] = set()
        for source in self.sources:
            if source.url in seen:
                raise ValueError(f"source {source.url} is listed twice")
            seen.add(source.url)
        names = [self.main_cadence] if self.cadences else []
        for i, option in enumerate(self.cadences):
            if option.name in names:
                raise ValueError(f"cadence '{option.name}' is named twice (the [schedule] one is "
                                 f"'{self.main_cadence}'; set schedule.name to rename it)")
            names.append(option.name)
            from newsletter.config.cadence import check_build_ahead

            try:
                check_build_ahead(option.send, self.schedule.timezone, option.approval, option.build_ahead)
            except ValueError as exc:
                raise ValueError(f"cadences[{i}] ({option.name}): {exc}") from None
        return self


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(file)"


def _message(err: ErrorDetails) -> str:
    msg = err["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    if err["type"] == "extra_forbidden":
        msg = "unknown setting (check the spelling)"
    elif err["type"] == "missing":
        msg = "required"
    return msg


_TABLE = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.-]+)\s*\]\]?")
_KEY = re.compile(r"^\s*([A-Za-z0-9_-]+)\s*=")


def _line_of(source: str, loc: tuple[int | str, ...]) -> int | None:
    """The line of the key a validation error is about (1-based), or of its table when the key is missing.

    tomllib keeps no positions, so this follows the file's tables and `[[array]]` entries line by line; keys
    written as dotted or quoted names are not found, and the error then goes without a line.
    """
    found: dict[tuple[int | str, ...], int] = {}
    table: tuple[int | str, ...] = ()
    counts: dict[str, int] = {}
    for number, text in enumerate(source.splitlines(), start=1):
        header = _TABLE.match(text)
        if header:
            name = header.group(2)
            if header.group(1) == "[[":
                counts[name] = counts.get(name, -1) + 1
                table = (*name.split("."), counts[name])
            else:
                table = tuple(name.split("."))
            found.setdefault(table, number)
            continue
        key = _KEY.match(text)
        if key and not text.lstrip().startswith("#"):
            found.setdefault((*table, key.group(1)), number)
    for end in range(len(loc), 0, -1):  # the key itself, else the nearest table that holds it
        if tuple(loc[:end]) in found:
            return found[tuple(loc[:end])]
    return None


def load_newsletter(path: str | Path) -> Newsletter:
    """Read and validate one schedule file. Raises ConfigError naming the file, line or field."""
    path = Path(path)
    try:
        source = path.read_text(encoding="utf-8")
        data = tomllib.loads(source)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    slug_from_name = "slug" not in data
    data.setdefault("slug", path.stem)
    data["path"] = str(path)
    try:
        return Newsletter.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            message = _message(err)
            if slug_from_name and err["loc"] == ("slug",):
                # The slug nobody wrote: say where it came from and the two ways out.
                fixed = re.sub(r"[^a-z0-9-]+", "-", path.stem.lower()).strip("-") or "my-digest"
                message = (f"'{path.stem}' (the file name) is not a valid slug: {message}; rename the file to "
                           f"{fixed}.toml or set slug = \"{fixed}\" in it")
            line = _line_of(source, err["loc"])
            lines.append(f"{path}: {_loc(err['loc'])}: {message}" + (f" (line {line})" if line else ""))
        raise ConfigError("\n".join(lines)) from None


@dataclass
class LoadResult:
    newsletters: dict[str, Newsletter] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def load_all(directory: str | Path) -> LoadResult:
    """Every `*.toml` in the schedules folder; a broken file is reported and the others still load."""
    result = LoadResult()
    directory = Path(directory)
    if not directory.is_dir():
        return result
    for path in sorted(directory.glob("*.toml")):
        try:
            nl = load_newsletter(path)
        except ConfigError as exc:
            result.errors.append(str(exc))
            continue
        made = [nl, *(nl.for_cadence(c.name) for c in nl.cadences)]
        taken = [n.slug for n in made if n.slug in result.newsletters]
        if taken:
            result.errors.append(f"{path}: slug: '{taken[0]}' is already used by "
                                 f"{result.newsletters[taken[0]].path}")
            continue
        for each in made:  # a cadence is scheduled, built, sent and archived as a newsletter of its own
            result.newsletters[each.slug] = each
    return result
