"""A local SendGrid v3 Mail Send server for tests and benchmarks: a real HTTP server on loopback.

It validates every POST /v3/mail/send against SendGrid's published OpenAPI schema
(tests/fixtures/sendgrid/tsg_mail_v3.json) plus the limits the schema does not state, answers the way SendGrid
does (202 + X-Message-Id, 400 with an `errors` body, 401, 413, 429 with X-RateLimit-* headers, 500), fails on
cue, and records what it accepted so a test can count deliveries per address.

It also answers GET /v3/messages?query=unique_args['key']="value" like SendGrid's Email Activity API (or 403, as
an account without the add-on does: `activity_api = False`), which is how a send whose outcome is unknown (crash
or cut connection mid-request) is reconciled.

Scheduled sends, as SendGrid documents them (the Mail Batch paths of tsg_mail_v3.json, the Scheduled Sends API of
twilio/sendgrid-oai's tsg_scheduled_sends_v3.json): POST /v3/mail/batch makes a batch id (201); a mail send may
carry a created `batch_id` and a `send_at` (at most 72 hours ahead) and is then held until its send_at;
POST /v3/user/scheduled_sends {batch_id, status: pause|cancel} (201; 400 when the batch already has a status or
10 batches are paused or cancelled), GET/PATCH/DELETE /v3/user/scheduled_sends/{batch_id}. At send_at a cancelled
batch's mail is discarded, a paused one's kept, any other delivered. A cancellation made later than 10 minutes
before send_at is accepted but, as SendGrid says, not guaranteed: this server then delivers (the worst case).
The server's clock is its own (`now`, `advance`, or POST /_clock {"advance": seconds} from another process), so
tests skip the minutes of a hold without waiting them; `deliveries()` counts the copies that are or will be
delivered, which is what a reader would see.

The Event Webhook, as SendGrid posts it: `event(address, kind)` makes an event about the copy an address got (the
request's custom_args at the top level, a unique sg_event_id), `post_events(url, events)` POSTs them signed with
the server's own ECDSA key (`webhook_public_key` verifies them).

Run it on its own (for the benchmark or by hand):  python tests/sendgrid_server.py --port 8025
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import re
import socket
import ssl
import struct
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import jsonschema

try:  # a base dependency of newsletter where a wheel exists
    import orjson
except ImportError:  # pragma: no cover
    orjson = None  # type: ignore[assignment]

SPEC_PATH = Path(__file__).parent / "fixtures" / "sendgrid" / "tsg_mail_v3.json"
MAX_BODY = 30 * 1024 * 1024
MAX_RECIPIENTS = 1000
MAX_PERSONALIZATION_BYTES = 10_000
MAX_SCHEDULE_AHEAD = 72 * 3600
CANCEL_LINE = 600  # no pause or cancel later than 10 minutes before send_at
MAX_PAUSED_OR_CANCELLED = 10

# The request body of CreateScheduledSend (POST /v3/user/scheduled_sends) in twilio/sendgrid-oai's
# spec/json/tsg_scheduled_sends_v3.json, transcribed (the fixture file holds the Mail Send spec only).
SCHEDULED_SEND_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "batch_id": {"type": "string", "pattern": "^[a-zA-Z0-9]"},
        "status": {"type": "string", "enum": ["pause", "cancel"]},
    },
    "required": ["batch_id", "status"],
}
# UpdateScheduledSend (PATCH /v3/user/scheduled_sends/{batch_id}) in the same file.
SCHEDULED_UPDATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"status": {"type": "string", "enum": ["cancel", "pause"]}},
    "required": ["status"],
}


def mail_send_schema() -> dict[str, Any]:
    """The PostMailSend request schema, with refs resolvable and the custom_args defect patched."""
    spec = json.loads(SPEC_PATH.read_text(encoding="utf-8"))
    schema = copy.deepcopy(
        spec["components"]["requestBodies"]["PostMailSend"]["content"]["application/json"]["schema"]
    )
    # The published schema types top-level custom_args as a string; the API and the official client send an
    # object of strings (as the per-personalization custom_args already is).
    schema["properties"]["custom_args"] = {"type": "object", "additionalProperties": {"type": "string"}}
    # Refs in the spec point at "#/components/...": carry the components so they resolve from this root.
    schema["components"] = spec["components"]
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


_VALIDATOR: jsonschema.protocols.Validator | None = None


def validator() -> jsonschema.protocols.Validator:
    global _VALIDATOR
    if _VALIDATOR is None:
        schema = mail_send_schema()
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
        _VALIDATOR = cls(schema, format_checker=cls.FORMAT_CHECKER)
    return _VALIDATOR


def _field(path: Any) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out or None  # type: ignore[return-value]


def _error(message: str, field_name: str | None = None, help_url: str | None = None) -> dict[str, Any]:
    return {"message": message, "field": field_name, "help": help_url}


def _kv_bytes(values: dict[str, Any] | None) -> int:
    """The bytes of keys and values as SendGrid counts them (UTF-8); an ASCII string's length is its size."""
    if not values:
        return 0
    total = 0
    for k, v in values.items():
        k, v = k if type(k) is str else str(k), v if type(v) is str else str(v)
        total += (len(k) if k.isascii() else len(k.encode())) + (len(v) if v.isascii() else len(v.encode()))
    return total


def _loads(raw: bytes) -> Any:
    """The request body as JSON: orjson where it is installed (a benchmark's server reads a million addresses),
    the standard library's json otherwise; ValueError when it is not JSON, either way."""
    if orjson is not None:
        return orjson.loads(raw)  # orjson.JSONDecodeError is a ValueError
    return json.loads(raw)


def check_request(body: Any, *, validate_schema: bool = True) -> list[dict[str, Any]]:
    """SendGrid's answer to a request body: [] when accepted, else its `errors` list."""
    errors: list[dict[str, Any]] = []
    if validate_schema:
        for err in sorted(validator().iter_errors(body), key=lambda e: list(e.absolute_path)):
            errors.append(_error(err.message, _field(err.absolute_path)))
            if len(errors) >= 20:
                break
        if errors:
            return errors
    if not isinstance(body, dict):
        return [_error("The request body must be a JSON object.")]
    personalizations = body.get("personalizations") or []
    if not personalizations:
        errors.append(
            _error(
                "The personalizations field is required and must have at least one personalization.",
                "personalizations",
            )
        )
    seen: set[str] = set()
    total = 0
    body_args = _kv_bytes(body.get("custom_args"))
    for i, p in enumerate(personalizations):
        for kind in ("to", "cc", "bcc"):
            for j, person in enumerate(p.get(kind) or []):
                total += 1
                addr = str(person.get("email", "")).lower()
                if addr in seen:
                    errors.append(
                        _error(
                            "Each email address in the personalization block should be unique between to, "
                            f"cc, and bcc. We found the first duplicate instance of [{addr}] in the "
                            f"personalizations.{i}.{kind} field.",
                            f"personalizations.{i}.{kind}.{j}.email",
                        )
                    )
                seen.add(addr)
        if _kv_bytes(p.get("substitutions")) >= MAX_PERSONALIZATION_BYTES:
            errors.append(
                _error(
                    "The total size of substitutions must be less than 10000 bytes per "
                    "personalization object.",
                    f"personalizations.{i}.substitutions",
                )
            )
        if _kv_bytes(p.get("custom_args")) + body_args >= MAX_PERSONALIZATION_BYTES:
            errors.append(
                _error(
                    "The total size of custom arguments must be less than 10000 bytes.",
                    f"personalizations.{i}.custom_args",
                )
            )
        if not p.get("subject") and not body.get("subject") and not body.get("template_id"):
            errors.append(
                _error(
                    "The subject is required. You can get around this requirement if you use a "
                    "template with a subject defined or if every personalization has a subject "
                    "defined.",
                    "subject",
                )
            )
    if total > MAX_RECIPIENTS:
        errors.append(
            _error(
                f"The personalizations field may contain at most {MAX_RECIPIENTS} recipients "
                f"(to, cc and bcc together); this request has {total}.",
                "personalizations",
            )
        )
    content = body.get("content") or []
    if not content and not body.get("template_id"):
        errors.append(
            _error("Unless a valid template_id is provided, the content parameter is required.", "content")
        )
    types = [c.get("type") for c in content]
    if "text/plain" in types and types.index("text/plain") != 0:
        errors.append(
            _error(
                "If present, text/plain must be first, followed by text/html, followed by any other content.",
                "content",
            )
        )
    return errors


def schedule_errors(body: dict[str, Any], server: SendGridServer) -> list[dict[str, Any]]:
    """The scheduling rules the schema does not state: a batch id made by POST /v3/mail/batch, send_at at most
    72 hours ahead."""
    errors = []
    batch_id = body.get("batch_id")
    if batch_id is not None and batch_id not in server.batch_ids:
        errors.append(_error("The batch ID is not valid. Create one with POST /v3/mail/batch.", "batch_id"))
    send_at = body.get("send_at")
    if send_at is not None and send_at > server.now() + MAX_SCHEDULE_AHEAD:
        errors.append(_error("The send_at parameter cannot be more than 72 hours in the future.", "send_at"))
    return errors


@dataclass
class Accepted:
    message_id: str
    recipients: list[str]
    custom_args: dict[str, str]
    body: dict[str, Any] | None  # kept unless keep_bodies=False (the 1M benchmark)
    at: float
    batch_id: str | None = None
    send_at: float | None = None
    # delivered, or scheduled (until send_at), then delivered / discarded (cancelled) / paused
    state: str = "delivered"


@dataclass
class _Cue:
    status: int
    count: int
    headers: dict[str, str] = field(default_factory=dict)


class SendGridServer:
    """Start with .start(), point SENDGRID_API_HOST at .url, inspect .accepted / .deliveries()."""

    def __init__(
        self,
        api_key: str | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        keep_bodies: bool = True,
        validate_schema: bool = True,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.api_key = api_key  # None: any Bearer token is accepted; a missing header is still 401
        self.keep_bodies = keep_bodies
        self.validate_schema = validate_schema
        # Full schema validation of every Nth request (the unstated limits are always checked). 1 in tests; the
        # 1M benchmark also measures the sender with the validator out of the way, since jsonschema over 1000
        # personalizations (~60 ms) would otherwise be what it measures.
        self.validate_every = 1
        self.lost_every = 0  # >0: every Nth mail send is accepted and its answer lost (the benchmark's faults)
        self.schema_validated = 0
        self.accepted: list[Accepted] = []
        self.rejected: list[tuple[int, Any]] = []  # (status, errors or None) for every non-202 answer
        self.requests = 0
        # Called with each accepted request before it is answered: lets a test kill the client at the worst
        # moment (the provider has the batch, the client does not know yet).
        self.on_accept: Callable[[Accepted], None] | None = None
        self.delay = 0.0  # seconds before answering each accepted mail send, like a slow API
        self.lock = threading.Lock()
        self._cues: list[_Cue] = []
        self._drops: list[str] = []  # "before" (cut while reading the body) or "after" (accepted, then cut)
        self._random: tuple[random.Random, float, tuple[int, ...]] | None = None
        self._storm: tuple[random.Random, float, float, float, float] | None = None
        # Faults of the other endpoints ("batch": POST /v3/mail/batch, "cancel": POST /v3/user/scheduled_sends,
        # "release": DELETE ...): ("fail", status) or ("drop-after", 0), in order.
        self._endpoint_cues: dict[str, list[tuple[str, int]]] = {}
        self.activity_api = True  # False: GET /v3/messages answers 403, like an account without the add-on
        self.offset = 0.0  # the server's clock runs this many seconds ahead of the machine's
        self.batch_ids: set[str] = set()
        self.scheduled: dict[str, tuple[str, float]] = {}  # batch id -> (pause|cancel, when it was set)
        self.calls: Counter[str] = Counter()  # requests per endpoint: mail, batch, cancel, release, activity...
        self.connections = 0  # TCP connections accepted
        self.mail_targets: list[str] = []  # each mail send's request target as sent (absolute through a proxy)
        # True: close each connection after its answer without saying so, as an idle timeout does between requests
        self.close_idle = False
        self._httpd = ThreadingHTTPServer((host, port), _handler(self))
        self._httpd.daemon_threads = True
        # HTTPS as the real API: the url names `localhost`, which the certificate of `tls` must be for.
        self.tls = tls is not None
        if tls is not None:
            self._httpd.socket = tls.wrap_socket(self._httpd.socket, server_side=True)
        # A client's kept-alive connection holds its handler thread until the client closes it: stop() must not
        # wait for that.
        self._httpd.block_on_close = False
        self.closed = 0  # TCP connections the server has closed
        close = self._httpd.shutdown_request

        def shutdown_request(request: Any) -> None:
            close(request)
            with self.lock:
                self.closed += 1

        self._httpd.shutdown_request = shutdown_request  # type: ignore[method-assign]
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"https://localhost:{port}" if self.tls else f"http://{host}:{port}"

    def start(self) -> SendGridServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name="sendgrid-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> SendGridServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- failure on cue --------------------------------------------------------------------------------------
    def fail_next(self, count: int, status: int = 500, headers: dict[str, str] | None = None) -> None:
        """The next `count` mail sends get `status` (e.g. 429, 500, 503, 401, 403) and are not accepted."""
        with self.lock:
            self._cues.append(_Cue(status, count, dict(headers or {})))

    def fail_randomly(self, rate: float, seed: int = 0, statuses: tuple[int, ...] = (429, 500)) -> None:
        """Each mail send fails with probability `rate` (reproducibly for a seed); rate 0 turns it off."""
        with self.lock:
            self._random = (random.Random(seed), rate, statuses) if rate > 0 else None

    def drop_next(self, count: int = 1, when: str = "before") -> None:
        """Cut the TCP connection (RST) of the next `count` mail sends.

        when="before": mid-request, after part of the body arrived; nothing is accepted.
        when="after": the request is accepted and recorded, then the connection is cut before the answer
        (the client cannot know it succeeded).
        """
        if when not in ("before", "after"):
            raise ValueError("when must be 'before' or 'after'")
        with self.lock:
            self._drops.extend([when] * count)

    def storm(self, seed: int, *, rate_429: float = 0.0, rate_500: float = 0.0, drop_before: float = 0.0,
              lost_202: float = 0.0) -> None:
        """Faults drawn independently for each mail send (reproducibly for a seed): 429, 500, a connection cut
        before the body was read, a 202 lost after the request was accepted."""
        with self.lock:
            self._storm = (random.Random(seed), rate_429, rate_500, drop_before, lost_202)

    def fail_endpoint(self, endpoint: str, count: int = 1, status: int = 500, *, drop_after: bool = False) -> None:
        """The next `count` calls to `endpoint` (batch, cancel, release) fail with `status`, or (drop_after) do
        their work and then cut the connection before answering."""
        with self.lock:
            self._endpoint_cues.setdefault(endpoint, []).extend(
                [("drop-after", 0) if drop_after else ("fail", status)] * count)

    def _endpoint_cue(self, endpoint: str) -> tuple[str, int] | None:
        with self.lock:
            cues = self._endpoint_cues.get(endpoint)
            return cues.pop(0) if cues else None

    # -- the clock -------------------------------------------------------------------------------------------
    def now(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        """Move the server's clock on (scheduled mail whose send_at passes is delivered or discarded)."""
        with self.lock:
            self.offset += max(0.0, seconds)
            self._tick()

    def _tick(self) -> None:
        """Decide every scheduled message whose send_at has come (call with the lock held)."""
        now = self.now()
        for acc in self.accepted:
            if acc.state == "scheduled" and acc.send_at is not None and acc.send_at <= now:
                acc.state = self._fate(acc)

    def _fate(self, acc: Accepted) -> str:
        status, since = self.scheduled.get(acc.batch_id or "", ("", 0.0))
        if status == "pause":
            return "paused"
        if status == "cancel" and acc.send_at is not None and since <= acc.send_at - CANCEL_LINE:
            return "discarded"
        return "delivered"  # no status, or a cancellation too late to be guaranteed: the worst case

    def reset(self) -> None:
        with self.lock:
            self.accepted.clear()
            self.rejected.clear()
            self._cues.clear()
            self._drops.clear()
            self._random = None
            self._storm = None
            self._endpoint_cues.clear()
            self.scheduled.clear()
            self.batch_ids.clear()
            self.calls.clear()
            self.requests = 0

    # -- what arrived ----------------------------------------------------------------------------------------
    def deliveries(self) -> Counter[str]:
        """How many copies each address got or will get: accepted mail, less what a cancelled (or paused)
        batch discards at its send_at."""
        with self.lock:
            self._tick()
            return Counter(addr for acc in self.accepted if self._will_deliver(acc) for addr in acc.recipients)

    def _will_deliver(self, acc: Accepted) -> bool:
        if acc.state == "scheduled":
            return self._fate(acc) == "delivered"
        return acc.state == "delivered"

    @property
    def discarded_recipients(self) -> int:
        """Copies accepted and then discarded (or to be) because their batch was cancelled in time."""
        with self.lock:
            self._tick()
            return sum(len(acc.recipients) for acc in self.accepted if not self._will_deliver(acc))

    @property
    def accepted_recipients(self) -> int:
        with self.lock:
            return sum(len(acc.recipients) for acc in self.accepted)

    def _next_cue(self) -> tuple[str, int, dict[str, str]] | None:
        with self.lock:
            if self.lost_every and self.requests % self.lost_every == 0:
                return ("drop-after", 0, {})
            if self._drops:
                return ("drop-" + self._drops.pop(0), 0, {})
            if self._cues:
                cue = self._cues[0]
                cue.count -= 1
                if cue.count <= 0:
                    self._cues.pop(0)
                return ("fail", cue.status, cue.headers)
            if self._random is not None:
                rng, rate, statuses = self._random
                if rng.random() < rate:
                    return ("fail", rng.choice(statuses), {})
            if self._storm is not None:
                rng, r429, r500, before, lost = self._storm
                draw = rng.random()
                for kind, p in (("429", r429), ("500", r500), ("drop-before", before), ("drop-after", lost)):
                    if draw < p:
                        return ("fail", int(kind), {}) if kind.isdigit() else (kind, 0, {})
                    draw -= p
        return None

    # -- the Event Webhook ----------------------------------------------------------------------------------
    @property
    def webhook_public_key(self) -> str:
        """The key to verify this server's webhook posts with, as SendGrid shows it (base64 DER)."""
        from cryptography.hazmat.primitives import serialization

        der = self._webhook_key().public_key().public_bytes(serialization.Encoding.DER,
                                                            serialization.PublicFormat.SubjectPublicKeyInfo)
        import base64

        return base64.b64encode(der).decode()

    def _webhook_key(self) -> Any:
        if getattr(self, "_ecdsa", None) is None:
            from cryptography.hazmat.primitives.asymmetric import ec

            self._ecdsa = ec.generate_private_key(ec.SECP256R1())
        return self._ecdsa

    def event(self, address: str, kind: str, *, after: float = 0.0, **extra: Any) -> dict[str, Any]:
        """One Event Webhook event about the copy `address` got, as SendGrid sends it: the request's custom_args
        at the top level, sg_message_id, a fresh sg_event_id, the timestamp `after` seconds past acceptance."""
        with self.lock:
            acc = next((a for a in reversed(self.accepted) if address.lower() in a.recipients), None)
        if acc is None:
            raise LookupError(f"nothing was accepted for {address}")
        return {**acc.custom_args, "email": address.lower(), "event": kind, "timestamp": int(acc.at + after),
                "sg_event_id": uuid.uuid4().hex, "sg_message_id": f"{acc.message_id}.filter0001.1.0", **extra}

    def message_for(self, address: str) -> dict[str, str]:
        """The parts ("text/plain", "text/html") of the last copy `address` got, its substitutions filled in as
        SendGrid fills them (literal replacement of each key)."""
        with self.lock:
            for acc in reversed(self.accepted):
                body = acc.body or {}
                for p in body.get("personalizations", []):
                    if any(t["email"].lower() == address.lower() for t in p.get("to", [])):
                        parts = {}
                        for part in body.get("content", []):
                            value = part["value"]
                            for key, sub in (p.get("substitutions") or {}).items():
                                value = value.replace(key, sub)
                            parts[part["type"]] = value
                        return parts
        raise LookupError(f"nothing was accepted for {address}")

    def post_events(self, url: str, events: list[dict[str, Any]]) -> Any:
        """POST events to a webhook the way SendGrid does: a JSON array, ECDSA-signed over timestamp + body."""
        import base64
        import urllib.request

        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        body = json.dumps(events, separators=(",", ":")).encode()
        ts = str(int(time.time()))
        signature = self._webhook_key().sign(ts.encode() + body, ec.ECDSA(hashes.SHA256()))
        request = urllib.request.Request(url, data=body, method="POST", headers={
            "Content-Type": "application/json", "User-Agent": "SendGrid Event API",
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": ts})
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - a loopback URL of the test's
            return json.loads(answer.read())

    def _record(self, body: dict[str, Any]) -> str:
        message_id = uuid.uuid4().hex[:22]
        send_at = body.get("send_at")
        recipients = [
            person["email"].lower()
            for p in body["personalizations"]
            for kind in ("to", "cc", "bcc")
            for person in p.get(kind) or []
        ]
        with self.lock:
            self.accepted.append(
                Accepted(
                    message_id,
                    recipients,
                    dict(body.get("custom_args") or {}),
                    body if self.keep_bodies else None,
                    self.now(),
                    body.get("batch_id"),
                    float(send_at) if send_at is not None else None,
                    "scheduled" if send_at is not None and send_at > self.now() else "delivered",
                )
            )
        return message_id

    def _activity(self, query: str, limit: int) -> list[dict[str, Any]]:
        """Messages whose custom args match every unique_args['k']="v" clause of the query."""
        wanted = dict(re.findall(r"unique_args\['([^']+)'\]\s*=\s*\"([^\"]*)\"", query))
        out: list[dict[str, Any]] = []
        with self.lock:
            for acc in self.accepted:
                if wanted and all(acc.custom_args.get(k) == v for k, v in wanted.items()):
                    for addr in acc.recipients:
                        out.append(
                            {
                                "msg_id": acc.message_id,
                                "to_email": addr,
                                "status": "processed",
                                "last_event_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(acc.at)),
                            }
                        )
                        if len(out) >= limit:
                            return out
        return out


def _rst(handler: BaseHTTPRequestHandler) -> None:
    # SO_LINGER 0 makes close() send a TCP RST: the client sees "connection reset", as with a network cut.
    handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    handler.connection.close()
    handler.close_connection = True


def _handler(server: SendGridServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "nginx"
        sys_version = ""
        protocol_version = "HTTP/1.1"  # keep-alive, as SendGrid's API answers

        def setup(self) -> None:
            super().setup()
            with server.lock:
                server.connections += 1

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            pass

        def _send(self, status: int, payload: Any = None, headers: dict[str, str] | None = None) -> None:
            data = b"" if payload is None else json.dumps(payload).encode()
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            if data:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            if server.close_idle:
                self.close_connection = True
            if status != 202 and self.command == "POST" and self.path.startswith("/v3/mail/send"):
                with server.lock:
                    server.rejected.append(
                        (status, payload.get("errors") if isinstance(payload, dict) else None)
                    )

        def _authorized(self) -> bool:
            auth = self.headers.get("Authorization", "")
            if not auth.startswith("Bearer ") or not auth[7:].strip():
                return False
            return server.api_key is None or auth[7:] == server.api_key

        def _unauthorized(self) -> None:
            self._send(
                401, {"errors": [_error("The provided authorization grant is invalid, expired, or revoked")]}
            )

        def _json_body(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                return json.loads(raw) if raw else None
            except ValueError:
                return ValueError

        def _fault(self, endpoint: str) -> tuple[str, int] | None:
            """Answer a cued failure of `endpoint` now (returns None then... or the cue to apply after the work)."""
            cue = server._endpoint_cue(endpoint)
            if cue and cue[0] == "fail":
                self._send(cue[1], {"errors": [_error("too many requests" if cue[1] == 429 else "internal error")]},
                           {"Retry-After": "1"} if cue[1] == 429 else None)
                return ("answered", cue[1])
            return cue

        def _schema_errors(self, schema: dict[str, Any], payload: Any) -> list[dict[str, Any]]:
            found = jsonschema.Draft202012Validator(schema).iter_errors(payload)
            return [_error(e.message, _field(e.absolute_path)) for e in found]

        def _scheduled_sends(self, method: str, batch_id: str | None) -> None:
            if not self._authorized():
                self._unauthorized()
                return
            endpoint = {"POST": "cancel", "DELETE": "release", "PATCH": "update"}.get(method, "scheduled")
            payload = self._json_body() if method in ("POST", "PATCH") else None
            with server.lock:
                server.calls[endpoint] += 1
                server._tick()
            cue = self._fault(endpoint)
            if cue and cue[0] == "answered":
                return
            if payload is ValueError:
                self._send(400, {"errors": [_error("invalid JSON")]})
                return
            with server.lock:
                status, answer = self._scheduled_locked(method, batch_id, payload)
            if cue and cue[0] == "drop-after":
                _rst(self)
                return
            self._send(status, answer)

        def _scheduled_locked(self, method: str, batch_id: str | None, payload: Any) -> tuple[int, Any]:
            if method == "GET" and batch_id is None:
                return 200, [{"batch_id": b, "status": st} for b, (st, _at) in server.scheduled.items()]
            if method == "POST" and batch_id is None:
                errors = self._schema_errors(SCHEDULED_SEND_SCHEMA, payload)
                if errors:
                    return 400, {"errors": errors}
                wanted = payload["batch_id"]
                if wanted not in server.batch_ids:
                    return 400, {"errors": [_error("batch id not found", "batch_id")]}
                if wanted in server.scheduled:
                    return 400, {"errors": [_error("a status has already been set for this batch id", "batch_id")]}
                if len(server.scheduled) >= MAX_PAUSED_OR_CANCELLED:
                    return 400, {"errors": [_error("max limit reached: you cannot pause or cancel more than "
                                                   f"{MAX_PAUSED_OR_CANCELLED} batches at a time", "batch_id")]}
                server.scheduled[wanted] = (payload["status"], server.now())
                return 201, {"batch_id": wanted, "status": payload["status"]}
            if batch_id is None:
                return 405, {"errors": [_error("method not allowed")]}
            if method == "GET":
                if batch_id not in server.batch_ids:
                    return 404, {"errors": [_error("batch id not found")]}
                entry = server.scheduled.get(batch_id)
                return 200, [{"batch_id": batch_id, "status": entry[0]}] if entry else []
            if batch_id not in server.scheduled:
                return 404, {"errors": [_error("no pause or cancellation for this batch id")]}
            if method == "PATCH":
                errors = self._schema_errors(SCHEDULED_UPDATE_SCHEMA, payload)
                if errors:
                    return 400, {"errors": errors}
                server.scheduled[batch_id] = (payload["status"], server.now())
                return 204, None
            if method == "DELETE":
                del server.scheduled[batch_id]
                for acc in server.accepted:  # a pause removed after send_at: delivered now
                    if acc.batch_id == batch_id and acc.state == "paused":
                        acc.state = "delivered"
                return 204, None
            return 405, {"errors": [_error("method not allowed")]}

        def _mail_batch(self, batch_id: str | None) -> None:
            if not self._authorized():
                self._unauthorized()
                return
            with server.lock:
                server.calls["batch" if batch_id is None else "batch-check"] += 1
            if batch_id is not None:  # GetMailBatch: validate a batch id
                if batch_id in server.batch_ids:
                    self._send(200, {"batch_id": batch_id})
                else:
                    self._send(400, {"errors": [_error("invalid batch id", "batch_id")]})
                return
            cue = self._fault("batch")
            if cue and cue[0] == "answered":
                return
            new = uuid.uuid4().hex
            with server.lock:
                server.batch_ids.add(new)
            if cue and cue[0] == "drop-after":
                _rst(self)
                return
            self._send(201, {"batch_id": new})

        def do_DELETE(self) -> None:  # noqa: N802 - stdlib naming
            match = re.fullmatch(r"/v3/user/scheduled_sends/([^/]+)", urlparse(self.path).path)
            if not match:
                self._send(404, {"errors": [_error("not found")]})
                return
            self._scheduled_sends("DELETE", match.group(1))

        def do_PATCH(self) -> None:  # noqa: N802 - stdlib naming
            match = re.fullmatch(r"/v3/user/scheduled_sends/([^/]+)", urlparse(self.path).path)
            if not match:
                self._send(404, {"errors": [_error("not found")]})
                return
            self._scheduled_sends("PATCH", match.group(1))

        def do_GET(self) -> None:  # noqa: N802 - stdlib naming
            url = urlparse(self.path)
            if url.path == "/_clock":
                self._send(200, {"now": server.now()})
                return
            scheduled = re.fullmatch(r"/v3/user/scheduled_sends(?:/([^/]+))?", url.path)
            if scheduled:
                self._scheduled_sends("GET", scheduled.group(1))
                return
            batch = re.fullmatch(r"/v3/mail/batch/([^/]+)", url.path)
            if batch:
                self._mail_batch(batch.group(1))
                return
            if url.path == "/_stats":  # for a benchmark running the server in another process
                counts = server.deliveries()
                self._send(200, {"requests": server.requests, "accepted_requests": len(server.accepted),
                                 "schema_validated": server.schema_validated,
                                 "recipients": sum(counts.values()), "distinct": len(counts),
                                 "duplicates": sum(c - 1 for c in counts.values() if c > 1),
                                 "discarded": server.discarded_recipients, "calls": dict(server.calls)})
                return
            if url.path == "/_reset":  # a benchmark's next run counts from zero
                server.reset()
                self._send(200, {"reset": True})
                return
            if url.path == "/_config":
                query = parse_qs(url.query)
                server.validate_every = int(query.get("validate_every", ["1"])[0])
                server.lost_every = int(query.get("lost_every", ["0"])[0])
                self._send(200, {"validate_every": server.validate_every, "lost_every": server.lost_every})
                return
            if url.path != "/v3/messages":
                self._send(404, {"errors": [_error("not found")]})
                return
            if not self._authorized():
                self._unauthorized()
                return
            with server.lock:
                server.calls["activity"] += 1
            if not server.activity_api:
                self._send(403, {"errors": [_error("access forbidden: this account has no Email Activity access")]})
                return
            params = parse_qs(url.query)
            limit = int(params.get("limit", ["10"])[0])
            self._send(200, {"messages": server._activity(params.get("query", [""])[0], limit)})

        def do_POST(self) -> None:  # noqa: N802 - stdlib naming
            path = urlparse(self.path).path
            if path == "/_clock":
                payload = self._json_body()
                server.advance(float(payload.get("advance", 0)) if isinstance(payload, dict) else 0.0)
                self._send(200, {"now": server.now()})
                return
            if path == "/v3/mail/batch":
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self._mail_batch(None)
                return
            if path == "/v3/user/scheduled_sends":
                self._scheduled_sends("POST", None)
                return
            if path != "/v3/mail/send":
                self._send(404, {"errors": [_error("not found")]})
                return
            with server.lock:
                server.requests += 1
                server.calls["mail"] += 1
                server.mail_targets.append(self.path)
                server._tick()
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._send(
                    413,
                    {
                        "errors": [
                            _error(
                                "The JSON payload you have included in your request is too "
                                "large. Please limit your request to 30MB."
                            )
                        ]
                    },
                )
                self.close_connection = True
                return
            cue = server._next_cue()
            if cue and cue[0] == "drop-before":
                self.rfile.read(min(length, 512))
                _rst(self)
                return
            raw = self.rfile.read(length)
            if not self._authorized():
                self._unauthorized()
                return
            if cue and cue[0] == "fail":
                status, headers = cue[1], dict(cue[2])
                if status == 429:
                    headers.setdefault("X-RateLimit-Limit", "600")
                    headers.setdefault("X-RateLimit-Remaining", "0")
                    headers.setdefault("X-RateLimit-Reset", str(int(time.time()) + 1))
                    msg = "too many requests"
                elif status == 401:
                    self._unauthorized()
                    return
                elif status == 403:
                    msg = "You are not authorized to send from that email address"
                else:
                    msg = "internal error" if status >= 500 else "request failed"
                self._send(status, {"errors": [_error(msg)]}, headers)
                return
            try:
                body = _loads(raw)
            except ValueError as exc:
                self._send(400, {"errors": [_error(f"Invalid JSON: {exc}")]})
                return
            with server.lock:
                full = server.validate_schema and server.requests % server.validate_every == 0
                server.schema_validated += full
            errors = check_request(body, validate_schema=full)
            if not errors and isinstance(body, dict):
                errors = schedule_errors(body, server)
            if errors:
                self._send(400, {"errors": errors})
                return
            message_id = server._record(body)
            if server.on_accept is not None:
                server.on_accept(server.accepted[-1])
            if server.delay:
                time.sleep(server.delay)
            if cue and cue[0] == "drop-after":
                _rst(self)
                return
            self._send(202, None, {"X-Message-Id": message_id})

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8025)
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--no-keep-bodies", action="store_true", help="record addresses only (saves memory)")
    args = parser.parse_args()
    validator()  # compile the schema before the first request arrives
    server = SendGridServer(args.api_key, port=args.port, keep_bodies=not args.no_keep_bodies).start()
    print(server.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
