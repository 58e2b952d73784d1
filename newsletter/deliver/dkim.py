"""DKIM: the outbox and SMTP messages signed with the operator's key (dkimpy), and checked before they go.

The key (NEWSLETTER_DKIM_KEY_FILE) is RSA (2048 bits by default, at least 1024 as RFC 8301 asks) or Ed25519
(RFC 8463), in PEM; `newsletter dkim keygen` writes one. A message is signed with relaxed/relaxed
canonicalization over the header fields RFC 6376 5.4.1 recommends that it carries, List-Unsubscribe and
List-Unsubscribe-Post included (Gmail wants them signed for one-click unsubscribe); the fields a forwarder
could add a second copy of (From, To, Subject, ...) are signed once more than they appear ("oversigned"), so an
added copy breaks the signature instead of being shown.

Before the first message of a send (`DkimSigner.ready`) the record published at SELECTOR._domainkey.DOMAIN is
looked up once and compared with the key: none, or one that does not match, stops the send with the record to
publish, before anyone is sent anything. Every signed message is then verified once against that record by
dkimpy's own verifier before it is handed on, so a signature a receiver would reject never leaves.
"""

from __future__ import annotations

import base64
import threading
from dataclasses import dataclass, field
from email.utils import parseaddr
from pathlib import Path
from typing import Literal

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from newsletter.deliver.dnslookup import DnsError, Lookup, tags
from newsletter.deliver.mailer import PermanentDeliveryError

Algorithm = Literal["rsa", "ed25519"]
SIGNING = {"rsa": b"rsa-sha256", "ed25519": b"ed25519-sha256"}
MIN_RSA_BITS = 1024  # RFC 8301 3.2: verifiers must reject smaller keys

# RFC 6376 5.4.1's list, as far as our messages carry them, plus List-Unsubscribe-Post (RFC 8058 3.1).
SIGNED = (
    "from", "reply-to", "subject", "date", "message-id", "to", "cc", "mime-version", "content-type",
    "content-transfer-encoding", "in-reply-to", "references", "list-id", "list-help", "list-unsubscribe",
    "list-unsubscribe-post", "list-subscribe", "list-post", "list-owner", "list-archive",
)
# Signed one extra time: a copy added after signing (a second From, a second List-Unsubscribe) breaks it.
OVERSIGNED = ("from", "reply-to", "subject", "date", "to", "cc", "list-id", "list-unsubscribe",
              "list-unsubscribe-post")


class DkimError(PermanentDeliveryError):
    """The message cannot be signed so that receivers accept it (no record, a key that does not match it, a
    signature that does not verify): the send stops before anything goes out; the message says what to do."""


class DkimKeyError(ValueError):
    """The key file cannot be used; says why."""


@dataclass(frozen=True)
class DkimKey:
    algorithm: Algorithm
    private: bytes = field(repr=False)  # as dkimpy takes it: PKCS#1 PEM (RSA) or the base64 seed (Ed25519)
    public: str  # the p= value
    bits: int | None = None  # RSA only

    def record(self) -> str:
        """The TXT record's value to publish at SELECTOR._domainkey.DOMAIN."""
        return f"v=DKIM1; k={self.algorithm}; p={self.public}"


def _from_private(key: object) -> DkimKey:
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise DkimKeyError(f"an RSA key of {key.key_size} bits: receivers reject DKIM keys under "
                               f"{MIN_RSA_BITS} bits (RFC 8301); make a 2048-bit one with `newsletter dkim keygen`")
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
        spki = key.public_key().public_bytes(serialization.Encoding.DER,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
        return DkimKey("rsa", pem, base64.b64encode(spki).decode(), key.key_size)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                 serialization.NoEncryption())
        raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return DkimKey("ed25519", base64.b64encode(seed), base64.b64encode(raw).decode())
    raise DkimKeyError(f"a {type(key).__name__.removeprefix('_')}: DKIM keys are RSA or Ed25519")


def parse_key(data: bytes) -> DkimKey:
    """An RSA or Ed25519 private key in PEM (PKCS#1 or PKCS#8), or an Ed25519 seed in base64 (dknewkey's form)."""
    text = data.strip()
    if b"-----BEGIN" in text:
        if b"ENCRYPTED" in text:
            raise DkimKeyError("the key is encrypted with a passphrase: DKIM signing needs it unencrypted "
                               "(readable by this user only)")
        try:
            key = serialization.load_pem_private_key(text, password=None)
        except (ValueError, TypeError) as exc:
            raise DkimKeyError(f"not a private key in PEM ({exc})") from None
        return _from_private(key)
    try:
        seed = base64.b64decode(text, validate=True)
    except ValueError:
        seed = b""
    if len(seed) == 32:
        return _from_private(ed25519.Ed25519PrivateKey.from_private_bytes(seed))
    raise DkimKeyError("not a private key: expected PEM (-----BEGIN PRIVATE KEY-----) or an Ed25519 seed")


def load_key(path: Path) -> DkimKey:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise DkimKeyError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return parse_key(data)
    except DkimKeyError as exc:
        raise DkimKeyError(f"{path}: {exc}") from None


def generate(algorithm: Algorithm, bits: int = 2048) -> tuple[bytes, DkimKey]:
    """A new key: its PEM (PKCS#8, what OpenSSL and other signers read) and what it signs with."""
    key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    if algorithm == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    else:
        key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    return pem, _from_private(key)


def record_name(selector: str, domain: str) -> str:
    return f"{selector}._domainkey.{domain}"


def zone_line(name: str, value: str) -> str:
    """A TXT record in zone-file syntax, in strings of at most 255 characters (an RSA key is longer)."""
    chunks = [value[i:i + 250] for i in range(0, len(value), 250)] or [""]
    strings = " ".join(f'"{c}"' for c in chunks)
    return f"{name}. IN TXT {strings}" if len(chunks) == 1 else f"{name}. IN TXT ( {strings} )"


def domain_of(address: str) -> str:
    return parseaddr(address)[1].rpartition("@")[2].strip().rstrip(".").lower()


def published_key_problem(key: DkimKey, records: list[str], selector: str, domain: str) -> str | None:
    """Why the records at SELECTOR._domainkey.DOMAIN do not let receivers verify this key, or None."""
    name = record_name(selector, domain)
    publish = f"publish: {zone_line(name, key.record())}"
    found = [r for r in records if "p=" in r.replace(" ", "")]
    if not found:
        return f"no DKIM record at {name}: receivers cannot verify the signature; {publish}"
    if len(found) > 1:
        return f"{len(found)} DKIM records at {name}: receivers may pick either; keep one: {publish}"
    record = tags(found[0])
    if record.get("v", "DKIM1") != "DKIM1":
        return f"the record at {name} has v={record['v']} (must be DKIM1); {publish}"
    if not record.get("p"):
        return f"the record at {name} is revoked (empty p=); {publish}"
    if record.get("k", "rsa").lower() != key.algorithm:
        return (f"the record at {name} is for a {record.get('k', 'rsa')} key but NEWSLETTER_DKIM_KEY_FILE holds an "
                f"{key.algorithm} key; {publish}")
    if record["p"] != key.public:
        return (f"the key in NEWSLETTER_DKIM_KEY_FILE does not match the record published at {name} (another "
                f"key, or an old one): every signature would fail; {publish}")
    return None


@dataclass
class DkimSigner:
    """Signs messages for the mailers. `lookup` asks DNS for the published record once per signing domain."""

    key: DkimKey
    selector: str
    domain: str | None = None  # None: the From domain of each message
    lookup: Lookup = field(default_factory=Lookup)
    _records: dict[str, bytes] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def signing_domain(self, from_address: str) -> str:
        return self.domain or domain_of(from_address)

    def ready(self, from_address: str) -> str:
        """The signing domain, once its published record is known to match the key; DkimError otherwise."""
        domain = self.signing_domain(from_address)
        with self._lock:
            if domain in self._records:
                return domain
        if not domain:
            raise DkimError(f"DKIM: no domain to sign for (From {from_address!r}); set NEWSLETTER_DKIM_DOMAIN")
        from_domain = domain_of(from_address)
        if from_domain and from_domain != domain and not from_domain.endswith("." + domain) \
                and not domain.endswith("." + from_domain):
            raise DkimError(f"DKIM: the signing domain {domain} is not the From domain {from_domain} nor its parent "
                            "or child: DMARC would not count the signature; set NEWSLETTER_DKIM_DOMAIN to "
                            f"{from_domain} or send from an address at {domain}")
        name = record_name(self.selector, domain)
        try:
            records = self.lookup.txt(name)
        except DnsError as exc:
            raise DkimError(f"DKIM: cannot look up {name} to check the key before sending: {exc}") from None
        problem = published_key_problem(self.key, records, self.selector, domain)
        if problem:
            raise DkimError(f"DKIM: {problem}")
        record = next(r for r in records if "p=" in r.replace(" ", ""))
        with self._lock:
            self._records[domain] = record.encode()
        return domain

    def sign(self, data: bytes, from_address: str) -> bytes:
        """The message with its DKIM-Signature, verified against the published record; DkimError if it fails."""
        domain = self.ready(from_address)
        present = _header_names(data)
        include = [h for h in SIGNED if h in present]
        include += [h for h in OVERSIGNED if h in present]
        try:
            signature = dkim.sign(data, self.selector.encode(), domain.encode(), self.key.private,
                                  canonicalize=(b"relaxed", b"relaxed"),
                                  signature_algorithm=SIGNING[self.key.algorithm],
                                  include_headers=[h.encode() for h in include])
        except dkim.DKIMException as exc:
            raise DkimError(f"DKIM: cannot sign the message: {exc}") from None
        signed = signature + data
        record = self._records[domain]
        name = record_name(self.selector, domain).encode()

        def published(qname: bytes, timeout: int = 5) -> bytes:
            return record if qname.rstrip(b".").lower() == name else b""

        if not dkim.verify(signed, dnsfunc=published):
            raise DkimError(f"DKIM: the signed message does not verify against the record at {name.decode()}: "
                            "nothing was sent")
        return signed


def _header_names(data: bytes) -> set[str]:
    head = data.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    names = set()
    for line in head.splitlines():
        if line[:1] in (b" ", b"\t") or b":" not in line:
            continue
        names.add(line.split(b":", 1)[0].strip().lower().decode("ascii", "replace"))
    return names


def signer_from_settings(key_file: Path | None, selector: str, domain: str | None,
                         servers: tuple[tuple[str, int], ...]) -> DkimSigner | None:
    if key_file is None:
        return None
    return DkimSigner(load_key(key_file), selector, domain, Lookup(servers))
