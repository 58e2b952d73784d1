"""Editors: accounts, passwords (argon2), sign-in with a lockout, CSRF tokens and API tokens.

Passwords are hashed with argon2id (argon2-cffi's defaults, rehashed on sign-in when those defaults rise).
API tokens are random and only their SHA-256 is stored: a token is as strong as a long random password, so a
slow hash would buy nothing and cost every API call.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.store.models import Editor, utcnow
from newsletter.subscribers.manage import InvalidAddress, normalize_email

MIN_PASSWORD = 10
LOCK_AFTER = 5  # wrong passwords in a row
LOCK_FOR = timedelta(minutes=15)
TOKEN_PREFIX = "nlt_"

_hasher = PasswordHasher()
_dummy_hash: str | None = None


def use_hasher(hasher: PasswordHasher) -> None:
    """Change the argon2 parameters (tests use argon2's cheapest profile; the defaults take ~0.3 s a hash)."""
    global _hasher, _dummy_hash
    _hasher, _dummy_hash = hasher, None


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
    """A new editor, or a new password for an existing one (which also lifts a lockout)."""
    address = editor_address(email)
    hashed = hash_password(password)
    editor = session.scalar(select(Editor).where(Editor.email == address))
    if editor is None:
        editor = Editor(email=address, password_hash=hashed, failed_logins=0)
        session.add(editor)
    else:
        editor.password_hash, editor.failed_logins, editor.locked_until = hashed, 0, None
    session.flush()
    return editor


@dataclass
class SignIn:
    editor_id: int | None  # set when the password was right
    locked_for: int = 0  # seconds left when the account is locked


def sign_in(session: Session, email: str, password: str) -> SignIn:
    """Check a password. After LOCK_AFTER wrong ones in a row the account is locked for LOCK_FOR,
    and while it is locked even the right password is refused (that is what stops guessing)."""
    try:
        address = editor_address(email)
    except AuthError:
        address = (email or "").strip().lower()
    editor = session.scalar(select(Editor).where(Editor.email == address))
    if editor is None:
        _verify(_dummy(), password)
        return SignIn(None)
    now = utcnow()
    if editor.locked_until and editor.locked_until > now:
        return SignIn(None, int((editor.locked_until - now).total_seconds()) + 1)
    if not _verify(editor.password_hash, password):
        editor.failed_logins = (editor.failed_logins or 0) + 1
        if editor.failed_logins >= LOCK_AFTER:
            editor.locked_until = now + LOCK_FOR
            return SignIn(None, int(LOCK_FOR.total_seconds()))
        return SignIn(None)
    editor.failed_logins, editor.locked_until = 0, None
    if _hasher.check_needs_rehash(editor.password_hash):
        editor.password_hash = _hasher.hash(password)
    return SignIn(editor.id)


def _verify(hashed: str, password: str) -> bool:
    try:
        return _hasher.verify(hashed, password)
    except (VerificationError, InvalidHashError):
        return False


class AttemptLimiter:
    """Wrong sign-ins per client address in a sliding window, in memory: it slows down guessing across
    many accounts (or unknown ones), which the per-account lock cannot see. One process, so memory is enough."""

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
