"""SendGrid backend: one request per batch of up to 1000 recipients, with the official `sendgrid` client.

The issue's HTML and text go once per request; each recipient is alone in its own personalization (nobody sees
another address) and gets their values through `substitutions` on the %%tokens%% of newsletter.render.tokens.
Values are HTML-escaped for the HTML part: the HTML body's tokens are renamed (%%name%% -> %%name:html%%)
so one personalization can carry the raw value for the text part and the escaped one for the HTML part.

An answer lost on the way back (a 202 nobody read, a connection cut, a kill -9 after the request) leaves the
engine unsure whether SendGrid took a batch. Two ways to find out, chosen by SENDGRID_SETTLE_BY:

- `activity`: ask the Email Activity API (`accepted`) for the messages carrying this database's install id,
  the send and the batch in custom_args; it is a paid add-on and lags by minutes.
- `hold` (hold-and-cancel): every request gets its own `batch_id` (POST /v3/mail/batch) and a `send_at`
  SENDGRID_HOLD_SECONDS ahead (default 660, 11 minutes), so that an unknown request can be cancelled
  (POST /v3/user/scheduled_sends, status cancel) while SendGrid still allows it (up to 10 minutes before
  `send_at`) and its readers sent again under a new batch; newsletter.deliver.cancels does the bookkeeping.
- `auto` (the default): `activity` when the account answers the Activity API, else `hold`.
"""

from __future__ import annotations

import html
import http.client
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from email.utils import parseaddr
from functools import lru_cache
from typing import Any

from python_http_client import exceptions as http_errors
from sendgrid import SendGridAPIClient

from newsletter.config import ConfigError
from newsletter.deliver import keepalive
from newsletter.deliver.errors import OutcomeUnknownError
from newsletter.deliver.mailer import (
    Message,
    PermanentDeliveryError,
    PushResult,
    Recipient,
    TemporaryDeliveryError,
)
from newsletter.deliver.message import MessageBuildError, recipient_display_name
from newsletter.render import tokens

try:  # a base dependency where a wheel exists (CPython); the standard library's json otherwise
    import orjson as _orjson
except ImportError:  # pragma: no cover - exercised where orjson is not installed
    _orjson = None  # type: ignore[assignment]

MAX_PERSONALIZATIONS = 1000
SETTLE_MODES = ("activity", "hold", "auto")
DEFAULT_HOLD_SECONDS = 660.0  # 11 minutes: SendGrid cancels up to 10 minutes before send_at; 1 minute to do it
MIN_HOLD_SECONDS = 630.0
MAX_HOLD_SECONDS = 72 * 3600.0  # SendGrid schedules at most 72 hours ahead
HOLD_TIMEOUT = 20.0  # seconds: an answer that takes longer would eat the minute left to cancel
MAX_SUBSTITUTION_BYTES = 10_000
ONE_CLICK = "List-Unsubscribe=One-Click"
NO_ACTIVITY = (401, 403, 404, 501)  # how an account without the Email Activity add-on answers


def _address(value: str) -> dict[str, str]:
    name, addr = parseaddr(value)
    return {"email": addr, "name": name} if name else {"email": addr}


def _html_token(key: str) -> str:
    return f"%%{key}:html%%"


@lru_cache(maxsize=16)
def _html_body(body: str, escaped: frozenset[str]) -> str:
    """The HTML body with the tokens of `escaped` keys renamed to their escaped-value form
    (%%name%% -> %%name:html%%); the other keys' values are the same escaped or not."""
    for key in tokens.keys_in(body):
        if key in escaped:
            body = body.replace(tokens.ALL[key], _html_token(key))
    return body


def _needs_escape(value: str) -> bool:
    """Whether html.escape(quote=True) would change `value`: five scans in C cost less than one regular
    expression's search, a million times a send."""
    return "&" in value or "<" in value or ">" in value or '"' in value or "'" in value


def _check_size(email: str, subs: dict[str, str]) -> None:
    """SendGrid refuses a request where one personalization's substitutions reach 10,000 bytes (UTF-8)."""
    if sum(len(k.encode()) + len(v.encode()) for k, v in subs.items()) >= MAX_SUBSTITUTION_BYTES:
        raise ValueError(f"substitutions for {email} exceed SendGrid's 10,000 byte limit")


class SendGridMailer:
    """Mailer over SendGrid's v3 Mail Send API (or any host speaking it: the EU host, a local test server)."""

    name = "sendgrid"

    def __init__(
        self,
        api_key: str,
        host: str = "https://api.sendgrid.com",
        timeout: float = 60.0,
        activity_settle_seconds: float | None = None,
        settle_by: str | None = None,
        hold_seconds: float | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        if not api_key:
            raise PermanentDeliveryError("SENDGRID_API_KEY is not set")
        settle_by = settle_by or os.environ.get("SENDGRID_SETTLE_BY") or "auto"
        if settle_by not in SETTLE_MODES:
            raise ConfigError(
                f"SENDGRID_SETTLE_BY: {settle_by!r} is not one of {', '.join(SETTLE_MODES)}")
        self.settle_by = settle_by
        if hold_seconds is None:
            raw = os.environ.get("SENDGRID_HOLD_SECONDS") or str(DEFAULT_HOLD_SECONDS)
            try:
                hold_seconds = float(raw)
            except ValueError:
                raise ConfigError(f"SENDGRID_HOLD_SECONDS: {raw!r} is not a number of seconds") from None
        if not MIN_HOLD_SECONDS <= hold_seconds <= MAX_HOLD_SECONDS:
            raise ConfigError(
                f"SENDGRID_HOLD_SECONDS: {hold_seconds:g} is outside {MIN_HOLD_SECONDS:g}..{MAX_HOLD_SECONDS:g} "
                "(SendGrid cancels a scheduled send only up to 10 minutes before it, and schedules at most 72 "
                "hours ahead)")
        self.hold_seconds = hold_seconds
        self.now = now  # the wall clock send_at is computed from (tests share the test server's clock)
        self._activity: bool | None = None  # whether the account answers the Email Activity API, once known
        # How old a request must be before the Email Activity API's silence about it is believed
        # (newsletter.deliver.engine); SendGrid's feed shows messages within a few minutes.
        if activity_settle_seconds is None:
            activity_settle_seconds = float(os.environ.get("SENDGRID_ACTIVITY_SETTLE_SECONDS", "300"))
        self.activity_settle_seconds = activity_settle_seconds
        self.client = SendGridAPIClient(api_key=api_key, host=host.rstrip("/"))
        self.client.client.timeout = timeout if settle_by == "activity" else min(timeout, HOLD_TIMEOUT)
        self._mail_url = f"{host.rstrip('/')}/v3/mail/send"
        self._mail_path = urllib.parse.urlsplit(self._mail_url).path
        self._connections = None if keepalive.proxied(self._mail_url) else keepalive.Connections(self._mail_url)
        self._prepared: tuple[Message, dict[str, Any], list[str], list[str]] | None = None

    # -- building the request --------------------------------------------------------------------------------
    def _prepare(self, message: Message) -> tuple[dict[str, Any], list[str], list[str]]:
        """The per-issue part of every request, computed once per Message."""
        if self._prepared and self._prepared[0] is message:
            return self._prepared[1], self._prepared[2], self._prepared[3]
        # The engine gives each batch its own Message (its custom_args) with the same bodies: each body is
        # scanned for tokens once (tokens.keys_in, _html_body).
        text_keys, html_keys = list(tokens.keys_in(message.text)), list(tokens.keys_in(message.html))
        body_html = _html_body(message.html, frozenset(html_keys))
        headers = {"List-Unsubscribe-Post": ONE_CLICK, **message.headers}
        if message.list_id:
            headers["List-Id"] = message.list_id
        content = []
        if message.text:
            content.append({"type": "text/plain", "value": message.text})
        if message.html:
            content.append({"type": "text/html", "value": body_html})
        base: dict[str, Any] = {
            "from": _address(message.from_address),
            # SendGrid substitutes in the subject too, and a subject is made of feed titles: no tokens there.
            "subject": tokens.defuse(message.subject),
            "content": content,
            "headers": headers,
        }
        if message.reply_to:
            base["reply_to"] = _address(message.reply_to)
        if message.categories:
            base["categories"] = list(message.categories)[:10]
        if message.custom_args:
            base["custom_args"] = {k: str(v) for k, v in message.custom_args.items()}
        self._prepared = (message, base, text_keys, html_keys)
        return base, text_keys, html_keys

    def build_request(self, message: Message, recipients: Sequence[Recipient],
                      failed: dict[str, str] | None = None) -> dict[str, Any]:
        """The Mail Send body. A recipient whose address cannot be used goes into `failed` (when given) instead
        of failing the whole request; without `failed` it raises MessageBuildError.

        A value goes in twice, as it is (%%key%%) and escaped for the HTML part (%%key:html%%), only for the
        keys where some recipient of this request has a value that escaping changes (a name with an apostrophe);
        for the others the HTML body keeps the plain token: one substitution less per recipient (the signed
        links never need escaping), and the same message."""
        if not recipients:
            raise ValueError("no recipients")
        if len(recipients) > MAX_PERSONALIZATIONS:
            raise ValueError(f"at most {MAX_PERSONALIZATIONS} recipients per request, got {len(recipients)}")
        base, text_keys, html_keys = self._prepare(message)
        # The per-issue part of each personalization, worked out once per request: which tokens take which
        # value. `plain`: the tokens given values as they are (the text's keys, and the HTML's not escaped);
        # `unchecked`: the HTML keys no recipient so far needed escaped; `escaped`: those some recipient did.
        plain = [(tokens.ALL[k], k) for k in dict.fromkeys(text_keys + html_keys)]
        unchecked = [(tokens.ALL[k], k) for k in html_keys]
        escaped: list[tuple[str, str]] = []
        tokens_size = sum(len(token) for token, _k in plain)
        escape = html.escape
        personalizations: list[dict[str, Any]] = []
        append = personalizations.append
        seen: set[str] = set()
        for r in recipients:
            email = r.email
            lowered = email.lower()
            if lowered in seen:  # SendGrid rejects the whole request for one repeated address
                raise ValueError(f"{email} appears twice in one batch")
            seen.add(lowered)
            try:
                name = recipient_display_name(r)  # the same check as a message built for SMTP
            except MessageBuildError as exc:
                if failed is None:
                    raise
                failed[email] = str(exc)
                continue
            p: dict[str, Any] = {"to": [{"email": email, "name": name} if name else {"email": email}]}
            own = r.values
            if plain or escaped:
                subs = {}
                size = tokens_size
                for token, key in plain:
                    value = email if key == "email" else name if key == "name" else own.get(key, "")
                    subs[token] = value
                    size += len(value)
                for token, key in escaped:
                    value = email if key == "email" else name if key == "name" else own.get(key, "")
                    if _needs_escape(value):
                        value = escape(value, quote=True)
                    subs[token] = value
                    size += len(value)
                p["substitutions"] = subs
                for item in unchecked:
                    if _needs_escape(subs[item[0]]):
                        break
                else:
                    item = None
                if item is not None:  # the first value to escape of one key or more in this request (rare)
                    for item in [i for i in unchecked if _needs_escape(subs[i[0]])]:
                        self._escape_from_now(item, text_keys, plain, unchecked, escaped, personalizations)
                        subs[_html_token(item[1])] = escape(subs[item[0]], quote=True)
                        if item[1] not in text_keys:
                            del subs[item[0]]
                    tokens_size = sum(len(token) for token, _k in plain + escaped)
                    size = sum(len(k) + len(v) for k, v in subs.items())
                # Characters are at most 4 bytes: count bytes only when the cheap bound says it might matter.
                if size * 4 >= MAX_SUBSTITUTION_BYTES:
                    _check_size(email, subs)
            url = own.get("unsubscribe_url")
            if url:
                # Per recipient: each one's header carries their own signed link.
                p["headers"] = {"List-Unsubscribe": f"<{url}>"}
            append(p)
        body = {"personalizations": personalizations, **base}
        if len(escaped) != len(html_keys):  # _prepare's content has every HTML key's token escaped
            body["content"] = self._content(message, frozenset(k for _t, k in escaped))
        return body

    @staticmethod
    def _escape_from_now(item: tuple[str, str], text_keys: list[str], plain: list[tuple[str, str]],
                         unchecked: list[tuple[str, str]], escaped: list[tuple[str, str]],
                         earlier: list[dict[str, Any]]) -> None:
        """HTML key `item` needs its escaped token in this request: the personalizations made so far had no value
        of it to escape, so theirs is the plain one; an HTML-only key leaves the plain tokens."""
        token, key = item
        unchecked.remove(item)
        escaped.append((_html_token(key), key))
        html_only = key not in text_keys
        if html_only:
            plain.remove(item)
        for p in earlier:
            subs = p.get("substitutions")
            if subs is not None and token in subs:
                subs[_html_token(key)] = subs.pop(token) if html_only else subs[token]
                if sum(len(k) + len(v) for k, v in subs.items()) * 4 >= MAX_SUBSTITUTION_BYTES:
                    _check_size(p["to"][0]["email"], subs)

    def _content(self, message: Message, escaped: frozenset[str]) -> list[dict[str, str]]:
        """The request's content parts, the HTML body's tokens escaped for the keys in `escaped` only."""
        content = []
        if message.text:
            content.append({"type": "text/plain", "value": message.text})
        if message.html:
            content.append({"type": "text/html", "value": _html_body(message.html, escaped)})
        return content

    # -- sending ---------------------------------------------------------------------------------------------
    def prepare(self, message: Message, recipients: Sequence[Recipient], batch_id: str | None = None,
                send_at: int | None = None) -> tuple[dict[str, Any], dict[str, str]]:
        """The whole request body (and who could not be put in it), built before the engine marks the batch
        `sending`: a crash while building leaves it certainly unsent (newsletter.deliver.engine). Held
        (hold-and-cancel): in SendGrid batch `batch_id`, to go out at `send_at` (epoch seconds)."""
        failed: dict[str, str] = {}
        body = self.build_request(message, recipients, failed)
        if batch_id is not None:
            body["batch_id"] = batch_id
        if send_at is not None:
            body["send_at"] = int(send_at)
        return body, failed

    def push(self, message: Message, recipients: Sequence[Recipient]) -> PushResult:
        return self.push_prepared(self.prepare(message, recipients))

    def push_prepared(self, prepared: tuple[dict[str, Any], dict[str, str]]) -> PushResult:
        body, failed = prepared
        if not body["personalizations"]:  # nobody left to send to
            return PushResult(failed=failed)
        try:
            message_id = self._post_mail(body)
        except http_errors.HTTPError as exc:
            raise _http_error(exc) from None
        except urllib.error.URLError as exc:
            # urllib wraps failures that happen while connecting or writing the request: nothing was accepted.
            raise TemporaryDeliveryError(f"SendGrid unreachable: {exc.reason}") from None
        except keepalive.NotSent as exc:  # the same, on a kept-alive connection
            raise TemporaryDeliveryError(f"SendGrid unreachable: {exc}") from None
        except (http.client.HTTPException, ConnectionError, TimeoutError) as exc:
            # The request went out whole and the answer never came: SendGrid may have accepted it.
            raise OutcomeUnknownError(f"no answer from SendGrid after sending the request: {exc!r}") from None
        return PushResult(provider_message_id=message_id, failed=failed)

    def _post_mail(self, body: dict[str, Any]) -> str | None:
        """POST /v3/mail/send with the official client's headers and error classes, the body serialized by
        orjson when it is installed (the client's json.dumps of a 1000-recipient body costs 3 ms, ten times
        orjson's), over a connection kept alive per thread (newsletter.deliver.keepalive): urllib opens a new
        one, TLS handshake included, for every request. Behind a proxy the environment names (HTTPS_PROXY,
        NO_PROXY), urllib as the official client does. Returns SendGrid's X-Message-Id."""
        client = self.client.client
        headers = {**client.request_headers, "Content-Type": "application/json"}
        data = _json_bytes(body)
        if self._connections is None:
            request = urllib.request.Request(self._mail_url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.build_opener().open(request, timeout=client.timeout) as response:
                    response.read()
                    return response.headers.get("X-Message-Id")
            except urllib.error.HTTPError as exc:
                raise http_errors.handle_error(exc) from None
        answer = self._connections.post(self._mail_path, data, headers, client.timeout)
        if not 200 <= answer.status < 300:
            error = http_errors.err_dict.get(answer.status, http_errors.HTTPError)
            raise error(answer.status, answer.reason, answer.body, answer.headers)
        return answer.headers.get("X-Message-Id")

    def accepted(self, custom_args: dict[str, str], limit: int = 1000) -> set[str] | None:
        """Addresses SendGrid's Email Activity API reports for messages sent with these custom args.

        None when the API cannot answer (no Email Activity add-on, network trouble): the caller must then not
        assume anything. An empty set means none were found; the Activity feed lags by a few minutes, so the
        caller only trusts an empty answer for requests old enough (see newsletter.deliver.engine).
        """
        if "install" not in custom_args:
            # Send and batch numbers restart at 1 in every database: without this database's install id, mail
            # sent from another one on the same account could answer for ours (a silent gap).
            raise ValueError("an Activity lookup needs the install id in its custom args")
        query = " AND ".join(f"unique_args['{k}']=\"{v}\"" for k, v in custom_args.items())
        try:
            response = self.client.client.messages.get(query_params={"query": query, "limit": limit})
            data = json.loads(response.body or b"{}")
        except http_errors.HTTPError as exc:
            if exc.status_code in NO_ACTIVITY:
                self._activity = False
            return None
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError):
            return None
        self._activity = True
        return {m["to_email"].lower() for m in data.get("messages", []) if m.get("to_email")}

    def activity_available(self) -> bool:
        """Whether the account answers the Email Activity API (asked once; a paid add-on on SendGrid).

        An account without it answers 403 (or 401/404/501 behind some proxies): the engine then does not wait
        for an activity log that will never speak (and, in `auto`, holds and cancels instead).
        """
        if self._activity is None:
            try:
                self.client.client.messages.get(
                    query_params={"query": "unique_args['install']=\"probe\"", "limit": 1})
                self._activity = True
            except http_errors.HTTPError as exc:
                if exc.status_code in NO_ACTIVITY:
                    self._activity = False
                else:
                    return False  # busy or down right now: not an answer about the add-on, ask again later
            except (urllib.error.URLError, http.client.HTTPException, OSError):
                return False
        return self._activity

    # -- hold-and-cancel -----------------------------------------------------------------------------------
    def holds(self) -> bool:
        """Whether requests are held (own batch_id, send_at ahead) so that an unknown outcome can be cancelled."""
        if self.settle_by == "auto":
            return not self.activity_available()
        return self.settle_by == "hold"

    def new_batch_id(self) -> str:
        """A fresh SendGrid batch id (POST /v3/mail/batch, 201 {"batch_id"}). An unused one costs nothing."""
        try:
            response = self.client.client.mail.batch.post()
            batch_id = json.loads(response.body or b"{}").get("batch_id")
        except http_errors.HTTPError as exc:
            raise _http_error(exc, "create a batch id") from None
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            raise TemporaryDeliveryError(f"SendGrid did not give a batch id: {exc!r}") from None
        if not isinstance(batch_id, str) or not batch_id:
            raise TemporaryDeliveryError("SendGrid answered POST /v3/mail/batch without a batch_id")
        return batch_id

    def cancel_batch(self, batch_id: str) -> bool:
        """Cancel the scheduled send of a batch: True once SendGrid says it is cancelled.

        False: SendGrid refused (400), which it does when 10 batches are already paused or cancelled; the
        caller releases what it can and asks again. Raises TemporaryDeliveryError for 429, 5xx and network
        trouble, PermanentDeliveryError when the key may not do this (401, 403).
        """
        try:
            self.client.client.user.scheduled_sends.post(request_body={"batch_id": batch_id, "status": "cancel"})
            return True
        except http_errors.HTTPError as exc:
            if exc.status_code != 400:
                raise _http_error(exc, "cancel a scheduled send") from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            raise TemporaryDeliveryError(f"no answer from SendGrid to a cancellation: {exc!r}") from None
        # 400 also means "this batch already has a status": an earlier run may have cancelled it, then died.
        status = self.scheduled_status(batch_id)
        if status == "pause":
            try:
                self.client.client.user.scheduled_sends._(batch_id).patch(request_body={"status": "cancel"})
            except http_errors.HTTPError as exc:
                raise _http_error(exc, "cancel a paused send") from None
            except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
                raise TemporaryDeliveryError(f"no answer from SendGrid to a cancellation: {exc!r}") from None
            return True
        return status == "cancel"

    def scheduled_status(self, batch_id: str) -> str | None:
        """The cancel/pause status SendGrid holds for a batch (GET /v3/user/scheduled_sends/{batch_id})."""
        try:
            response = self.client.client.user.scheduled_sends._(batch_id).get()
            entries = json.loads(response.body or b"[]")
        except http_errors.HTTPError as exc:
            if exc.status_code == 404:
                return None
            raise _http_error(exc, "read a scheduled send") from None
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            raise TemporaryDeliveryError(f"no answer from SendGrid about a scheduled send: {exc!r}") from None
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict) and entry.get("batch_id") == batch_id:
                return str(entry.get("status"))
        return None

    def release_batch(self, batch_id: str) -> None:
        """Delete a cancellation whose send_at has passed (its mail is discarded): it frees one of the 10."""
        try:
            self.client.client.user.scheduled_sends._(batch_id).delete()
        except http_errors.HTTPError as exc:
            if exc.status_code != 404:  # 404: nothing to release (released before, by us or by hand)
                raise _http_error(exc, "release a cancellation") from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            raise TemporaryDeliveryError(f"no answer from SendGrid to a release: {exc!r}") from None

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self._connections is not None:
            self._connections.close()


def _json_bytes(body: dict[str, Any]) -> bytes:
    """The request body as JSON: orjson when it is installed (and takes the body), else the standard library."""
    if _orjson is not None:
        try:
            return _orjson.dumps(body)
        except TypeError:  # orjson.JSONEncodeError: e.g. a lone surrogate, which json escapes
            pass
    return json.dumps(body).encode("utf-8")


def _errors_text(exc: http_errors.HTTPError) -> str:
    try:
        errors = json.loads(exc.body or b"{}").get("errors") or []
    except (ValueError, AttributeError):
        errors = []
    parts = []
    for err in errors[:5]:
        text = str(err.get("message", "")).strip()
        if err.get("field"):
            text = f"{err['field']}: {text}"
        parts.append(text)
    return "; ".join(p for p in parts if p) or (exc.reason or "no details")


def _retry_after(headers: Any) -> float | None:
    if not headers:
        return None
    value = headers.get("Retry-After")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
    reset = headers.get("X-RateLimit-Reset")
    if reset:
        try:
            return max(0.0, float(reset) - time.time())
        except ValueError:
            pass
    return None


def _http_error(exc: http_errors.HTTPError, doing: str | None = None) -> Exception:
    status = exc.status_code
    detail = _errors_text(exc)
    if doing:  # not a mail send: say which call, since the key may lack only this one's scope
        detail = f"{detail} (asked to {doing})"
    if status == 429 or status >= 500:
        return TemporaryDeliveryError(f"SendGrid answered {status}: {detail}", _retry_after(exc.headers))
    if status == 401:
        return PermanentDeliveryError(
            f"SendGrid rejected the API key (401): {detail}. Check SENDGRID_API_KEY."
        )
    if status == 403:
        return PermanentDeliveryError(f"SendGrid refused the send (403): {detail}")
    if status == 413:
        return PermanentDeliveryError(f"SendGrid says the request is too large (413): {detail}")
    return PermanentDeliveryError(f"SendGrid rejected the request ({status}): {detail}")


def from_settings(settings: Any) -> SendGridMailer:
    return SendGridMailer(settings.sendgrid_api_key or "", settings.sendgrid_api_host)
