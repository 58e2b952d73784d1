"""The reader's "manage your subscription" page, opened from the signed link in every email.

- GET  /m/{token}   the reader's choices: sections, frequency, time zone, format, a pause, leaving
- POST /m/{token}   one of: save the choices, pause for N weeks, resume, leave (unsubscribe)

No password: the signed link (newsletter.subscribers.tokens, purpose MANAGE) is the authority, as the
unsubscribe link is. The form also carries a CSRF field bound to the link (`Signer.form_token`), and a post
from another site's page is refused (Sec-Fetch-Site / Origin, as the subscribe form does): a form taken from
one reader's page cannot be posted to another reader's link, and a forged or altered link changes nothing.
A change is recorded with its time (newsletter.subscribers.preferences) and applies from the next issue.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import parse_qs

from sqlalchemy import Engine, select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from newsletter.config import Newsletter, Settings
from newsletter.store.db import session_scope
from newsletter.store.models import NewsletterRow, Subscription, utcnow
from newsletter.subscribers import preferences
from newsletter.subscribers import status as subscription_status
from newsletter.subscribers.manage import linked_subscription
from newsletter.subscribers.tokens import MANAGE, InvalidToken, Signer, TokenData
from newsletter.web.limits import BodyTooLarge, read_body

log = logging.getLogger(__name__)

MAX_FORM_BODY = 16 * 1024  # a few choices and a CSRF field


@dataclass
class _State:
    email: str
    name: str
    status: str
    prefs: preferences.Preferences


def manage_routes(
    settings: Settings, get_db: Callable[[], Engine], signer: Callable[[], Signer],
    load_schedule: Callable[[Settings, str], Newsletter | None], *, page_of: Callable[..., Response],
    invalid_link: Callable[[], Response], cross_site: Callable[[Request, str], bool],
) -> list[Route]:
    """The routes, with the public pages' own frame (`page_of`), invalid-link answer and cross-site check."""
    _page, _invalid_link, _cross_site = page_of, invalid_link, cross_site

    def read(token: str) -> TokenData | None:
        try:
            return signer().read(token, MANAGE)  # the MAC first: a forged link costs no query
        except InvalidToken:
            return None

    def subscription(session, data: TokenData) -> tuple[Subscription, str, NewsletterRow] | None:  # noqa: ANN001
        return linked_subscription(session, data.subscriber_id, data.newsletter_slug)

    def state(data: TokenData) -> _State | None:
        with session_scope(get_db()) as session:
            found = subscription(session, data)
            if found is None:
                return None
            sub, email, nl = found
            return _State(email, nl.name, sub.status, preferences.of(sub))

    def page(token: str, nl: Newsletter | None, st: _State, notice: str | None = None,
             error: str | None = None, status: int = 200) -> Response:
        name = html.escape(st.name)
        if st.status in subscription_status.LEFT:
            return _page("You are unsubscribed", f"<p>{html.escape(st.email)} no longer receives {name}.</p>"
                         "<p>To come back, subscribe again on the newsletter's page.</p>", status)
        csrf = html.escape(signer().form_token(token), quote=True)
        hidden = f'<input type=hidden name=csrf value="{csrf}">'
        parts = [f"<p>For {html.escape(st.email)}. Changes apply from the next issue.</p>"]
        if notice:
            parts.append(f'<p role=status style="color:#166534">{html.escape(notice)}</p>')
        if error:
            parts.append(f'<p role=alert style="color:#b91c1c">{html.escape(error)}</p>')
        now = utcnow()
        if st.prefs.paused(now) and st.prefs.paused_until is not None:
            parts.append(f"<p>Paused until {_day(st.prefs.paused_until)}.</p>"
                         f"<form method=post>{hidden}<input type=hidden name=action value=resume>"
                         "<button type=submit>Resume now</button></form>")
        fields = [hidden, "<input type=hidden name=action value=save>"]
        sections = nl.sections if nl is not None else []
        if sections:
            boxes = "".join(
                f'<label style="display:block"><input type=checkbox name=section value="{html.escape(s, True)}"'
                f'{"" if s in st.prefs.sections_off else " checked"} style="width:auto"> {html.escape(s)}</label>'
                for s in sections)
            fields.append(f"<fieldset><legend>Sections</legend>{boxes}</fieldset>")
        cadences = preferences.cadence_names(nl)
        if len(cadences) > 1:
            current = st.prefs.frequency or cadences[0]
            options = "".join(f'<option value="{html.escape(c, True)}"{" selected" if c == current else ""}>'
                              f"{html.escape(c.capitalize())}</option>" for c in cadences)
            fields.append(f"<p><label>Frequency<br><select name=frequency>{options}</select></label></p>")
        zone = st.prefs.timezone or (nl.schedule.timezone if nl is not None else "UTC")
        zones = "".join(f'<option{" selected" if z == zone else ""}>{html.escape(z)}</option>'
                        for z in preferences.time_zones())
        fields.append(f"<p><label>Time zone<br><select name=timezone>{zones}</select></label></p>")
        formats = "".join(
            f'<label style="display:block"><input type=radio name=format value={value} style="width:auto"'
            f'{" checked" if st.prefs.format == value else ""}> {label}</label>'
            for value, label in (("html", "HTML (with pictures and layout)"), ("text", "Plain text only")))
        fields.append(f"<fieldset><legend>Email format</legend>{formats}</fieldset>")
        fields.append("<p><button type=submit>Save my choices</button></p>")
        parts.append(f"<form method=post>{''.join(fields)}</form>")
        parts.append(
            f"<h2>Take a break</h2><form method=post>{hidden}<input type=hidden name=action value=pause>"
            f"<p><label>Pause for (weeks)<br><input type=number name=weeks min=1 "
            f"max={preferences.MAX_PAUSE_WEEKS} value=2 required></label></p>"
            "<button type=submit>Pause</button></form>")
        parts.append(f"<h2>Leave</h2><form method=post>{hidden}<input type=hidden name=action value=leave>"
                     f"<p>{html.escape(st.email)} will no longer receive {name}.</p>"
                     "<button type=submit>Unsubscribe</button></form>")
        return _page(f"Manage your subscription to {st.name}", "".join(parts), status)

    async def manage_page(request: Request) -> Response:
        token = request.path_params["token"]
        data = read(token)
        st = await run_in_threadpool(state, data) if data is not None else None
        if data is None or st is None:
            return _invalid_link()
        return page(token, load_schedule(settings, data.newsletter_slug), st)

    def apply(data: TokenData, nl: Newsletter | None, form: dict[str, list[str]]) -> tuple[_State, str] | None:
        action = (form.get("action") or ["save"])[0]
        with session_scope(get_db()) as session:
            found = subscription(session, data)
            if found is None:
                return None
            sub, email, nlrow = found
            if sub.status in subscription_status.LEFT:
                return _State(email, nlrow.name, sub.status, preferences.of(sub)), ""
            if action == "leave":
                subscription_status.set_status(session, data.subscriber_id, nlrow.id, "unsubscribed")
                notice = "unsubscribed"
            elif action == "pause":
                preferences.change(session, sub, nl, origin="web", pause_weeks=(form.get("weeks") or [""])[0])
                notice = "Paused. You will not get the issues sent until then."
            elif action == "resume":
                preferences.change(session, sub, nl, origin="web", pause_weeks=0)
                notice = "Resumed: the next issue comes to you."
            else:
                changes: dict[str, object] = {
                    "sections_on": form.get("section", []),
                    "format": (form.get("format") or ["html"])[0],
                }
                if "timezone" in form:
                    changes["timezone"] = form["timezone"][0]
                if "frequency" in form:
                    changes["frequency"] = form["frequency"][0]
                changed = preferences.change(session, sub, nl, origin="web", **changes)  # type: ignore[arg-type]
                notice = "Saved. Changes apply from the next issue." if changed else "Nothing changed."
            session.flush()
            status = session.scalar(select(Subscription.status).where(Subscription.id == sub.id)) or sub.status
            return _State(email, nlrow.name, status, preferences.of(sub)), notice

    async def manage(request: Request) -> Response:
        token = request.path_params["token"]
        data = read(token)
        if data is None:
            return _invalid_link()
        if _cross_site(request, settings.base_url):
            return _page("Please use the page itself", "<p>This form only accepts posts from its own page.</p>",
                         403)
        try:
            raw = await read_body(request, MAX_FORM_BODY)
        except BodyTooLarge:
            return _page("That was too much", "<p>The form sends a few choices, nothing larger.</p>", 413)
        form = parse_qs(raw.decode("utf-8", "replace"))
        if not signer().check_form_token(token, (form.get("csrf") or [""])[0]):
            # A form from another page (another reader's, an old copy of another link): nothing changes.
            return _page("Please use the page itself",
                         "<p>This form did not come from your subscription's page. Open the link from your email "
                         "and try again.</p>", 403)
        nl = load_schedule(settings, data.newsletter_slug)
        try:
            done = await run_in_threadpool(apply, data, nl, form)
        except preferences.PreferenceError as exc:
            st = await run_in_threadpool(state, data)
            if st is None:
                return _invalid_link()
            return page(token, nl, st, error=str(exc), status=400)
        if done is None:
            return _invalid_link()
        st, notice = done
        log.info("subscriber %s changed their choices for %s (%s)", data.subscriber_id, data.newsletter_slug,
                 (form.get("action") or ["save"])[0])
        return page(token, nl, st, notice=notice if notice != "unsubscribed" else None)

    return [
        Route("/m/{token}", manage_page, methods=["GET"]),
        Route("/m/{token}", manage, methods=["POST"]),
    ]


def _day(value: datetime) -> str:
    return f"{value.day} {value:%B %Y}"
