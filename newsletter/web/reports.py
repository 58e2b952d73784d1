"""The editor's report pages: what happened after each sent issue, and the trend across a newsletter's issues.

- GET  /editor/reports/{slug}                          the trend (audience, click rate, unsubscribes per issue)
- GET  /editor/reports/{slug}/trend.csv                its table
- GET  /editor/reports/{slug}/issues/{number}          one issue: figures, clicks per story, the first 7 days,
                                                       complaint and bounce rates beside Gmail's lines
- GET  /editor/reports/{slug}/issues/{number}/{table}.csv   summary, stories, days
- POST /editor/reports/{slug}/release                  release the guard's hold on scheduled sends

Behind RequireEditor like every /editor/ page; the figures are newsletter.report.figures' (the CLI and the API
print the same).
"""

from __future__ import annotations

import csv
import io
from typing import Any

from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from newsletter.report import guard
from newsletter.report.figures import (
    GMAIL_LIMIT,
    GMAIL_RECOMMENDED,
    IssueReport,
    Trend,
    issue_report,
    summary_rows,
    trend,
)
from newsletter.store.db import session_scope
from newsletter.store.models import IssueRow, NewsletterRow
from newsletter.web import charts
from newsletter.web.pages import flash, page, redirect
from newsletter.web.signin import RequireEditor, form_action
from newsletter.web.state import WebState, web_state

TABLES = ("summary", "stories", "days")


def _issue_id(state: WebState, slug: str, number: int) -> int:
    with session_scope(state.engine) as session:
        found = session.scalar(select(IssueRow.id).join(NewsletterRow).where(NewsletterRow.slug == slug,
                                                                             IssueRow.number == number))
    if found is None:
        raise HTTPException(404, f"{slug} has no issue #{number}.")
    return found


def report_for(state: WebState, slug: str, number: int) -> IssueReport:
    issue_id = _issue_id(state, slug, number)
    with session_scope(state.engine) as session:
        return issue_report(session, issue_id)


def trend_for(state: WebState, slug: str) -> Trend:
    with session_scope(state.engine) as session:
        if session.scalar(select(NewsletterRow.id).where(NewsletterRow.slug == slug)) is None:
            raise HTTPException(404, f"There is no newsletter {slug}.")
        nl = state.newsletter(slug)
        if nl is not None:
            guard.check(session, nl)
        return trend(session, slug)


def tables(r: IssueReport) -> dict[str, tuple[list[str], list[list[Any]]]]:
    return {
        "summary": (["figure", "value"], [list(row) for row in summary_rows(r)]),
        "stories": (["position", "story", "clicks", "unique_clicks"],
                    [[s.position, s.title, s.clicks, s.unique_clicks] for s in r.stories]),
        "days": (["day", "date", "clicks", "opens"], [[d.day, d.date, d.clicks, d.opens] for d in r.days]),
    }


def trend_table(t: Trend) -> tuple[list[str], list[list[Any]]]:
    return (["issue", "sent_at", "audience", "delivered", "clickers", "click_rate", "unsubscribed"],
            [[i.number, i.sent_at or "", i.audience, i.delivered, i.clickers, f"{i.click_rate:.4f}", i.unsubscribed]
             for i in t.issues])


def _csv(name: str, header: list[str], rows: list[list[Any]]) -> Response:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    for row in rows:
        # A cell starting with = + - @ would run as a formula in a spreadsheet: story titles come from feeds.
        writer.writerow([f"'{v}" if isinstance(v, str) and v[:1] in ("=", "+", "-", "@") else v for v in row])
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}.csv"',
                             "Cache-Control": "private, no-store"})


async def issue_page(request: Request) -> Response:
    slug, number = request.path_params["slug"], request.path_params["number"]
    r = await run_in_threadpool(report_for, web_state(request), slug, number)
    story_chart = charts.bars(f"Clicks per story, issue #{r.number}",
                              [(f"{s.position}. {s.title}", s.clicks) for s in r.stories])
    day_chart = charts.lines(f"Clicks and opens over the first {len(r.days)} days",
                             [f"d{d.day}" for d in r.days],
                             [("Clicks", [d.clicks for d in r.days]), ("Opens", [d.opens for d in r.days])])
    rate_chart = charts.rates("Complaint and bounce rates beside Gmail's 0.1% and 0.3% lines",
                              [("Complaint rate", r.complaint_rate), ("Bounce rate", r.bounce_rate)],
                              [("0.1%", GMAIL_RECOMMENDED), ("0.3%", GMAIL_LIMIT)])
    return page(request, "report_issue.html", {
        "r": r, "slug": slug, "summary": summary_rows(r), "story_chart": story_chart, "day_chart": day_chart,
        "rate_chart": rate_chart})


async def issue_csv(request: Request) -> Response:
    slug, number, table = (request.path_params["slug"], request.path_params["number"],
                           request.path_params["table"])
    if table not in TABLES:
        raise HTTPException(404, f"No table {table}: one of {', '.join(TABLES)}.")
    r = await run_in_threadpool(report_for, web_state(request), slug, number)
    header, rows = tables(r)[table]
    return _csv(f"{slug}-{number}-{table}", header, rows)


async def trend_page(request: Request) -> Response:
    slug = request.path_params["slug"]
    t = await run_in_threadpool(trend_for, web_state(request), slug)
    labels = [f"#{i.number}" for i in t.issues]
    audience = charts.lines("Audience per issue", labels, [("Audience", [i.audience for i in t.issues])])
    clicks = charts.lines("Click rate per issue", labels,
                          [("Click rate", [round(i.click_rate * 100, 2) for i in t.issues])], unit="%")
    unsubscribes = charts.bars("Unsubscribes per issue", [(f"#{i.number}", i.unsubscribed) for i in t.issues])
    return page(request, "report_trend.html", {"t": t, "slug": slug, "audience_chart": audience,
                                               "click_chart": clicks, "unsub_chart": unsubscribes})


async def trend_csv(request: Request) -> Response:
    slug = request.path_params["slug"]
    t = await run_in_threadpool(trend_for, web_state(request), slug)
    header, rows = trend_table(t)
    return _csv(f"{slug}-trend", header, rows)


@form_action
async def release(request: Request, form: FormData) -> Response:
    slug = request.path_params["slug"]
    state = web_state(request)

    def go() -> int:
        with session_scope(state.engine) as session:
            return guard.release(session, slug, request.session.get("editor_email") or "editor")

    released = await run_in_threadpool(go)
    flash(request, "ok", "Released: scheduled sends go out again." if released else "Nothing was held.")
    return redirect(f"/editor/reports/{slug}")


REPORT_ROUTES = [
    Route("/{slug}", trend_page, methods=["GET"]),
    Route("/{slug}/trend.csv", trend_csv, methods=["GET"]),
    Route("/{slug}/release", release, methods=["POST"]),
    Route("/{slug}/issues/{number:int}", issue_page, methods=["GET"]),
    Route("/{slug}/issues/{number:int}/{table}.csv", issue_csv, methods=["GET"]),
]


def routes() -> list:
    return [Mount("/editor/reports", routes=REPORT_ROUTES, middleware=[Middleware(RequireEditor)])]
