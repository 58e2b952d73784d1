"""Subscribers: add, import from CSV (a report per row), list."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.store.models import NewsletterRow, Subscriber, Subscription, Suppression, utcnow


class InvalidAddress(ValueError):
    pass


def normalize_email(raw: str) -> str:
    """A deliverable-looking address, normalized (domain lowercased, IDNA). No DNS lookups: imports stay fast."""
    try:
        return validate_email((raw or "").strip(), check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise InvalidAddress(str(exc)) from None


@dataclass
class AddResult:
    email: str
    status: str  # added, exists, reactivated, suppressed
    subscriber_id: int


def add_subscriber(
    session: Session,
    newsletter: NewsletterRow,
    email: str,
    *,
    name: str | None = None,
    fields: dict[str, str] | None = None,
    status: str = "active",
    origin: str = "cli",
) -> AddResult:
    address = normalize_email(email)
    person = session.scalar(select(Subscriber).where(Subscriber.email == address))
    if person is None:
        person = Subscriber(email=address, name=name or None, fields=fields or {})
        session.add(person)
        session.flush()
    else:
        if name and not person.name:
            person.name = name
        if fields:
            person.fields = {**(person.fields or {}), **fields}
    sub = session.scalar(
        select(Subscription).where(
            Subscription.newsletter_id == newsletter.id, Subscription.subscriber_id == person.id
        )
    )
    suppressed = session.scalar(
        select(Suppression.reason).where(
            Suppression.email == address,
            (Suppression.newsletter_id.is_(None)) | (Suppression.newsletter_id == newsletter.id),
        )
    )
    if sub is None:
        sub = Subscription(newsletter_id=newsletter.id, subscriber_id=person.id, origin=origin,
                           status="unsubscribed" if suppressed else status,
                           confirmed_at=utcnow() if status == "active" else None)
        session.add(sub)
        session.flush()
        return AddResult(address, "suppressed" if suppressed else "added", person.id)
    if suppressed:
        return AddResult(address, "suppressed", person.id)  # a re-import never resubscribes someone who left
    return AddResult(address, "exists", person.id)


@dataclass
class RowProblem:
    row: int  # 1-based line number in the file, header included
    value: str
    reason: str


@dataclass
class ImportReport:
    added: int = 0
    existing: int = 0
    suppressed: int = 0
    problems: list[RowProblem] = field(default_factory=list)


def read_csv_rows(text: str) -> tuple[list[str], Iterable[tuple[int, dict[str, str]]]]:
    reader = csv.DictReader(io.StringIO(text))
    headers = [h.strip().lower() for h in reader.fieldnames or []]
    reader.fieldnames = headers
    return headers, ((reader.line_num, row) for row in reader)


def import_csv(session: Session, newsletter: NewsletterRow, path: Path, *, origin: str = "import") -> ImportReport:
    """Import `email[,name,...]` rows. Invalid rows are reported with their line; valid rows are kept."""
    text = path.read_text(encoding="utf-8-sig")
    headers, rows = read_csv_rows(text)
    if "email" not in headers:
        raise InvalidAddress(f"{path}: line 1: no 'email' column (columns: {', '.join(headers) or 'none'})")
    report = ImportReport()
    seen: set[str] = set()
    for line, row in rows:
        raw = (row.get("email") or "").strip()
        try:
            address = normalize_email(raw)
        except InvalidAddress as exc:
            report.problems.append(RowProblem(line, raw, str(exc)))
            continue
        if address in seen:
            report.problems.append(RowProblem(line, raw, "duplicate of an earlier row"))
            continue
        seen.add(address)
        extra = {k: v for k, v in row.items() if k not in ("email", "name") and k and v}
        with session.begin_nested():
            result = add_subscriber(session, newsletter, address, name=(row.get("name") or "").strip() or None,
                                    fields=extra, origin=origin)
        if result.status == "added":
            report.added += 1
        elif result.status == "suppressed":
            report.suppressed += 1
        else:
            report.existing += 1
    return report


def list_subscriptions(session: Session, newsletter: NewsletterRow, status: str | None = None):  # noqa: ANN201
    query = (
        select(Subscriber.email, Subscriber.name, Subscription.status, Subscription.created_at)
        .join(Subscription, Subscription.subscriber_id == Subscriber.id)
        .where(Subscription.newsletter_id == newsletter.id)
        .order_by(Subscription.id)
    )
    if status:
        query = query.where(Subscription.status == status)
    return session.execute(query).all()
