"""Editors: accounts, passwords (argon2), sign-in and its throttle, session generations, CSRF and API tokens.

Passwords are hashed with argon2id (argon2-cffi's defaults, rehashed on sign-in when those defaults rise).
Every sign-in attempt that is checked costs one argon2 verification, whether the address is an editor's or not,
and wrong tries slow down the next try for that address from that client only (`SignInThrottle`): nobody
elsewhere can lock an editor out, and the answers never tell which addresses are editors'.
Each editor has a session generation, copied into the sign-in cookie; signing out or a new password bumps it,
which ends every cookie issued before (`end_sessions`).
API tokens are random and only their SHA-256 is stored: a token is as strong as a long random password, so a
slow hash would buy nothing and cost every API call.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.store.models import Editor
from newsletter.subscribers.manage import InvalidAddress, normalize_email

MIN_PASSWORD = 10
TOKEN_PREFIX = "nlt_"

_hasher = PasswordHasher()
_dummy_hash: str | None = None
_verify_seconds = 0.0  # a running average of one verification, for answers that skip it


def use_hasher(hasher: PasswordHasher) -> None:
    """Change the argon2 parameters (tests use argon2's cheapest profile; the defaults take ~0.3 s a hash)."""
    global _hasher, _dummy_hash, _verify_seconds
    _hasher, _dummy_hash, _verify_seconds = hasher, None, 0.0


def _dummy() -> str:
    # Verified against when the address is unknown, so a wrong address costs as long as a wrong password.
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = _hasher.hash(secrets.token_urlsafe(16))
    return _dummy_hash


class AuthError(ValueError):
    pass


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise AuthError(f"the password must have at least {MIN_PASSWORD} characters")
    return _hasher.hash(password)


def editor_address(email: str) -> str:
    """Editors sign in with their address in any case: it is kept lowercased."""
    try:
        return normalize_email(email).lower()
    except InvalidAddress as exc:
        raise AuthError(f"{email}: {exc}") from None


def create_editor(session: Session, email: str, password: str) -> Editor:
    """A new editor, or a new password for an existing one (which ends their sessions)."""
    address = editor_address(email)
    hashed = hash_password(password)
    editor = session.scalar(select(Editor).where(Editor.email == address))
    if editor is None:
        editor = Editor(email=address, password_hash=hashed, failed_logins=0, session_generation=0)
        session.add(editor)
    else:
        editor.password_hash, editor.failed_logins, editor.locked_until = hashed, 0, None
        end_sessions(editor)
    session.flush()
    return editor


def change_password(session: Session, email: str, password: str) -> Editor:
    """A new password for an existing editor; every session signed in with the old one ends."""
    address = editor_address(email)
    if session.scalar(select(Editor.id).where(Editor.email == address)) is None:
        raise AuthError(f"no editor {address}: add one with `newsletter editors add {address}`")
    return create_editor(session, address, password)


def end_sessions(editor: Editor) -> None:
    """Every cookie issued to this editor so far stops working (they carry the old generation)."""
    editor.session_generation = (editor.session_generation or 0) + 1


@dataclass
class SignIn:
    editor_id: int | None  # set when the password was right
    generation: int = 0  # the editor's session generation, for the cookie


def sign_in(session: Session, email: str, password: str) -> SignIn:
    """Check a password, at the cost of one argon2 verification whether the address is an editor's or not
    (throttling wrong tries is SignInThrottle's business, in front of this)."""
    try:
        address = editor_address(email)
    except AuthError:
        address = (email or "").strip().lower()
    editor = session.scalar(select(Editor).where(Editor.email == address))
    if editor is None:
        _verify(_dummy(), password)
        return SignIn(None)
    if not _verify(editor.password_hash, password):
        return SignIn(None)
    if _hasher.check_needs_rehash(editor.password_hash):
        editor.password_hash = _hasher.hash(password)
    return SignIn(editor.id, editor.session_generation or 0)


def _verify(hashed: str, password: str) -> bool:
    global _verify_seconds
    started = time.perf_counter()
    try:
        return _hasher.verify(hashed, password)
    except (VerificationError, InvalidHashError):
        return False
    finally:
        took = time.perf_counter() - started
        _verify_seconds = took if not _verify_seconds else 0.8 * _verify_seconds + 0.2 * took


def verify_seconds() -> float:
    """How long one password verification takes here: an answer that skips it waits this long instead, so a
    refused try looks like a checked one from outside."""
    if not _verify_seconds:
        _verify(_dummy(), secrets.token_urlsafe(8))
    return _verify_seconds


class SignInThrottle:
    """Wrong sign-ins per (address typed, client address): after FREE_TRIES, each next try for that pair has
    to wait twice as long as the one before (2 s, 4 s, 8 s ... at most MAX_DELAY). Keyed by what was typed, so
    unknown addresses slow down exactly as editors' do; keyed by client too, so a stranger's wrong guesses
    slow down only the stranger. A right password clears the pair. In memory: `serve` is one process."""

    FREE_TRIES = 3
    MAX_DELAY = 900.0
    FORGET_AFTER = 24 * 3600.0  # a pair's count starts again after a quiet day
    MAX_KEYS = 50_000  # bound the memory an attacker can make us use

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._state: dict[tuple[str, str], tuple[int, float]] = {}  # key -> (failures, last failure)

    @staticmethod
    def key(email: str, client: str) -> tuple[str, str]:
        return ((email or "").strip().lower()[:320], client)

    def _delay(self, failures: int) -> float:
        if failures < self.FREE_TRIES:
            return 0.0
        return min(self.MAX_DELAY, 2.0 ** (failures - self.FREE_TRIES + 1))

    def wait(self, key: tuple[str, str]) -> int:
        """Seconds before this pair may try again (0: now)."""
        failures, last = self._state.get(key, (0, 0.0))
        left = last + self._delay(failures) - self.clock()
        return int(left) + 1 if left > 0 else 0

    def failed(self, key: tuple[str, str]) -> None:
        now = self.clock()
        failures, last = self._state.get(key, (0, now))
        if now - last > self.FORGET_AFTER:
            failures = 0
        self._state[key] = (failures + 1, now)
        if len(self._state) > self.MAX_KEYS:
            oldest = sorted(self._state.items(), key=lambda kv: kv[1][1])[: self.MAX_KEYS // 10]
            for stale, _ in oldest:
                del self._state[stale]

    def succeeded(self, key: tuple[str, str]) -> None:
        self._state.pop(key, None)


class AttemptLimiter:
    """Events per client address in a sliding window, in memory: wrong sign-ins across many addresses (which
    SignInThrottle, keyed by address too, cannot see), or subscribe posts. One process, so memory is enough."""

    def __init__(self, limit: int = 20, window: float = 600.0) -> None:
        self.limit, self.window = limit, window
        self._failures: dict[str, list[float]] = {}

    def _recent(self, key: str, now: float) -> list[float]:
        times = [t for t in self._failures.get(key, []) if now - t < self.window]
        if times:
            self._failures[key] = times
        else:
            self._failures.pop(key, None)
        return times

    def blocked_for(self, key: str) -> int:
        now = time.monotonic()
        times = self._recent(key, now)
        if len(times) < self.limit:
            return 0
        return int(self.window - (now - times[0])) + 1

    def failed(self, key: str) -> None:
        self._failures.setdefault(key, []).append(time.monotonic())
        if len(self._failures) > 10_000:  # bound the memory an attacker can make us use
            now = time.monotonic()
            for k in list(self._failures):
                self._recent(k, now)


# --- CSRF: a random token kept in the (signed) session, echoed by every form -----------------------------


def csrf_token(session: dict) -> str:
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


def csrf_ok(session: dict, submitted: str | None) -> bool:
    expected = session.get("csrf")
    return bool(expected and submitted) and hmac.compare_digest(str(expected), str(submitted))


# --- API tokens -------------------------------------------------------------------------------------------


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def issue_api_token(session: Session, email: str) -> str:
    """A new API token for the editor (replacing any earlier one). Only its hash is stored."""
    address = editor_address(email)
    editor = session.scalar(select(Editor).where(Editor.email == address))
    if editor is None:
        raise AuthError(f"no editor {address}: add one with `newsletter editors add {address}`")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    editor.api_token_hash = _token_hash(token)
    session.flush()
    return token


def editor_for_token(session: Session, token: str) -> Editor | None:
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    return session.scalar(select(Editor).where(Editor.api_token_hash == _token_hash(token)))
