"""A reader's choices for one newsletter: sections turned off, cadence, time zone, email format, a pause.

They live on the subscription row (NULL: the newsletter's default), so the audience query reads them beside the
status. Every change goes through `change`, which checks it against the newsletter's schedule file (a section
or cadence it does not have, a time zone that does not exist: PreferenceError naming the field) and writes one
`preference_change` row per field changed, with its time and origin. Nothing here sends or renders: a change
applies from the next issue that is built and sent (an issue already being sent keeps the rows it claimed).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from sqlalchemy.orm import Session

from newsletter.config import Newsletter
from newsletter.render.variant import FORMATS, variant_key
from newsletter.store.models import PreferenceChange, Subscription, utcnow

MAX_PAUSE_WEEKS = 52
_UNSET: Any = object()


class PreferenceError(ValueError):
    """A choice the newsletter does not offer; the message names the field."""


@dataclass(frozen=True)
class Preferences:
    sections_off: tuple[str, ...] = ()
    frequency: str | None = None  # a cadence name of the newsletter; None: its first (default) cadence
    timezone: str | None = None  # IANA name; None: the newsletter's own
    format: str = "html"
    paused_until: datetime | None = None  # naive UTC
    changed_at: datetime | None = None

    def paused(self, at: datetime) -> bool:
        return self.paused_until is not None and self.paused_until > at

    def as_dict(self) -> dict[str, Any]:
        return {
            "sections_off": list(self.sections_off),
            "frequency": self.frequency,
            "timezone": self.timezone,
            "format": self.format,
            "paused_until": self.paused_until.isoformat(timespec="seconds") + "Z" if self.paused_until else None,
            "changed_at": self.changed_at.isoformat(timespec="seconds") + "Z" if self.changed_at else None,
        }


def of(sub: Subscription) -> Preferences:
    return Preferences(
        sections_off=tuple(s for s in (sub.sections_off or []) if isinstance(s, str)),
        frequency=sub.frequency,
        timezone=sub.timezone,
        format=sub.format if sub.format in FORMATS else "html",
        paused_until=sub.paused_until,
        changed_at=sub.preferences_changed_at,
    )


def check_timezone(value: str) -> str:
    value = value.strip()
    if value in ("UTC", "Etc/UTC"):
        return value
    if value not in _zones():
        raise PreferenceError(f"timezone: unknown time zone {value!r} (use an IANA name such as Europe/Paris)")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise PreferenceError(f"timezone: unknown time zone {value!r}") from None
    return value


_ZONES: list[frozenset[str]] = []


def _zones() -> frozenset[str]:
    if not _ZONES:
        _ZONES.append(frozenset(available_timezones()))
    return _ZONES[0]


def time_zones() -> list[str]:
    """Every IANA zone name this machine knows, sorted (for the manage page's list)."""
    return sorted(_zones() | {"UTC"})


def cadence_names(nl: Newsletter | None) -> list[str]:
    """The cadences a reader may pick between (empty when the newsletter has just the one)."""
    return nl.cadence_names if nl is not None else []


def parse_sections(raw: str) -> list[str]:
    """A CSV or command-line list of section names: separated by `;` or `|` (names may hold commas)."""
    sep = ";" if ";" in raw else "|"
    return [" ".join(p.split()) for p in raw.split(sep) if p.strip()]


def change(
    session: Session, sub: Subscription, nl: Newsletter | None, *, origin: str, now: datetime | None = None,
    sections_off: Any = _UNSET, sections_on: Any = _UNSET, frequency: Any = _UNSET, timezone: Any = _UNSET,
    format: Any = _UNSET, paused_until: Any = _UNSET, pause_weeks: Any = _UNSET,
) -> list[str]:
    """Apply the given choices (others stay as they are); returns the names of the fields that changed.

    `sections_on` is the manage page's form: every section not in it is off. `pause_weeks` 0 ends a pause.
    Raises PreferenceError (nothing changed) when a value is not one the newsletter offers.
    """
    now = now or utcnow()
    wanted: dict[str, Any] = {}
    known = list(nl.sections) if nl is not None else None
    if sections_on is not _UNSET:
        on = [" ".join(str(s).split()) for s in sections_on]
        if known is not None:
            unknown = [s for s in on if s not in known]
            if unknown:
                raise PreferenceError(f"sections: {unknown[0]!r} is not a section of this newsletter")
            sections_off = [s for s in known if s not in on]
        else:
            sections_off = []
    if sections_off is not _UNSET:
        off = list(dict.fromkeys(" ".join(str(s).split()) for s in sections_off if str(s).strip()))
        if known is not None:
            unknown = [s for s in off if s not in known]
            if unknown:
                choices = ", ".join(known) or "none"
                raise PreferenceError(f"sections: {unknown[0]!r} is not a section of this newsletter "
                                      f"(its sections: {choices})")
        wanted["sections_off"] = off or None
    if frequency is not _UNSET:
        value = (frequency or "").strip() or None
        names = cadence_names(nl)
        if value is not None and nl is not None and value not in names:
            offered = ", ".join(names) if names else "this newsletter has one cadence"
            raise PreferenceError(f"frequency: {value!r} is not offered ({offered})")
        wanted["frequency"] = None if names and value == names[0] else value
    if timezone is not _UNSET:
        zone = check_timezone(timezone) if (timezone or "").strip() else None
        # The page shows the newsletter's own zone until the reader picks one: saving it back is no choice.
        if not (zone and nl is not None and sub.timezone is None and zone == nl.schedule.timezone):
            wanted["timezone"] = zone
    if format is not _UNSET:
        value = (format or "html").strip().lower()
        if value not in FORMATS:
            raise PreferenceError(f"format: {value!r} is not one of html, text")
        wanted["format"] = None if value == "html" else value
    if pause_weeks is not _UNSET:
        try:
            weeks = int(pause_weeks)
        except (TypeError, ValueError):
            raise PreferenceError(f"pause: {pause_weeks!r} is not a number of weeks") from None
        if not 0 <= weeks <= MAX_PAUSE_WEEKS:
            raise PreferenceError(f"pause: between 0 and {MAX_PAUSE_WEEKS} weeks")
        paused_until = now + timedelta(weeks=weeks) if weeks else None
    if paused_until is not _UNSET:
        wanted["paused_until"] = paused_until
    changed = []
    for name, value in wanted.items():
        old = getattr(sub, name)
        if old == value:
            continue
        setattr(sub, name, value)
        session.add(PreferenceChange(subscription_id=sub.id, field=name, old=_json(old), new=_json(value),
                                     origin=origin, changed_at=now))
        changed.append(name)
    if changed:
        sub.preferences_changed_at = now
        sub.choice_key = variant_key(sub.format, sub.sections_off)
        session.flush()
    return changed


def _json(value: Any) -> Any:
    return value.isoformat(timespec="seconds") + "Z" if isinstance(value, datetime) else value


def history(session: Session, subscription_id: int) -> list[PreferenceChange]:
    from sqlalchemy import select

    return list(session.scalars(select(PreferenceChange).where(PreferenceChange.subscription_id == subscription_id)
                                .order_by(PreferenceChange.changed_at, PreferenceChange.id)))


# The fields the CLI, the API and CSV imports name, and how each maps onto `change`.
FIELDS = ("sections_off", "frequency", "timezone", "format", "pause_weeks")
# CSV import columns: `sections` lists the sections a reader gets (separated by ';'), `tz` their time zone.
CSV_COLUMNS = ("sections", "frequency", "tz", "format")


def from_csv(row: dict[str, str], nl: Newsletter | None) -> dict[str, Any]:
    """The choices a CSV row gives (blank cells: none), checked against the newsletter; PreferenceError else."""
    values: dict[str, Any] = {}
    if (row.get("sections") or "").strip():
        on = parse_sections(row["sections"])
        known = nl.sections if nl is not None else []
        unknown = [s for s in on if s not in known]
        if unknown:
            raise PreferenceError(f"sections: {unknown[0]!r} is not a section of this newsletter "
                                  f"(its sections: {', '.join(known) or 'none'})")
        values["sections_off"] = [s for s in known if s not in on]
    if (row.get("frequency") or "").strip():
        names = cadence_names(nl)
        value = row["frequency"].strip().lower()
        if value not in names:
            raise PreferenceError(f"frequency: {value!r} is not offered "
                                  f"({', '.join(names) if names else 'this newsletter has one cadence'})")
        values["frequency"] = value
    if (row.get("tz") or "").strip():
        values["timezone"] = check_timezone(row["tz"])
    if (row.get("format") or "").strip():
        value = row["format"].strip().lower()
        if value not in FORMATS:
            raise PreferenceError(f"format: {value!r} is not one of html, text")
        values["format"] = value
    return values


def apply(session: Session, sub: Subscription, nl: Newsletter | None, values: dict[str, Any], *,
          origin: str) -> list[str]:
    """`change` from named fields (FIELDS); an unknown name is a PreferenceError naming it."""
    unknown = [k for k in values if k not in FIELDS]
    if unknown:
        raise PreferenceError(f"{unknown[0]}: not a preference (use {', '.join(FIELDS)})")
    return change(session, sub, nl, origin=origin, **values)


def subscription_of(session: Session, newsletter_id: int, address: str) -> Subscription | None:
    """The subscription of a normalized address (newsletter.subscribers.manage.normalize_email)."""
    from sqlalchemy import select

    from newsletter.store.models import Subscriber

    return session.scalar(select(Subscription).join(Subscriber, Subscriber.id == Subscription.subscriber_id)
                          .where(Subscription.newsletter_id == newsletter_id, Subscriber.email == address))
