"""`newsletter dkim keygen`: a DKIM key pair for signing the outbox and SMTP messages, and the record to publish."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from newsletter.cli.common import console, fail, settings

dkim_app = typer.Typer(help="DKIM: the key that signs your messages so receivers can tell they are yours.",
                       no_args_is_help=True)


def _write_private(path: Path, data: bytes, force: bool) -> None:
    """Created readable by this user alone (0600) from the first byte: the key never exists with wider rights."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    fd = os.open(path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)  # O_CREAT's mode is cut by the umask only, and an existing file keeps its own
        os.write(fd, data)
    finally:
        os.close(fd)


def _default_domain() -> str | None:
    s = settings()
    if s.dkim_domain:
        return s.dkim_domain
    from newsletter.config import load_all
    from newsletter.deliver.dkim import domain_of

    domains = {domain_of(nl.from_address) for nl in load_all(s.schedules_dir).newsletters.values()}
    return domains.pop() if len(domains) == 1 else None


def register(app: typer.Typer) -> None:
    @dkim_app.command("keygen")
    def keygen_cmd(
        out: Path = typer.Option(Path("dkim.key"), "--out", help="Where to write the private key (0600); the "
                                 "public key goes beside it as OUT.pub."),
        key_type: str = typer.Option("rsa", "--type", help="rsa (every receiver verifies it) or ed25519 "
                                     "(RFC 8463: short, but not verified everywhere yet)."),
        bits: int = typer.Option(2048, "--bits", min=1024, max=4096, help="RSA key size."),
        selector: str = typer.Option(None, "--selector", help="The selector (default: NEWSLETTER_DKIM_SELECTOR, "
                                     "else 'newsletter')."),
        domain: str = typer.Option(None, "--domain", help="The signing domain (default: NEWSLETTER_DKIM_DOMAIN, "
                                   "else the From domain of your schedules when they share one)."),
        force: bool = typer.Option(False, "--force", help="Replace an existing key file."),
    ) -> None:
        """Write a DKIM key pair and print the DNS TXT record to publish.

        Example: `newsletter dkim keygen --domain example.org --out /etc/newsletter/dkim.key`
        """
        from cryptography.hazmat.primitives import serialization

        from newsletter.deliver.dkim import generate, parse_key, record_name, zone_line

        if key_type not in ("rsa", "ed25519"):
            fail(f"--type must be rsa or ed25519, not {key_type!r}")
        selector = selector or settings().dkim_selector
        domain = (domain or _default_domain() or "").strip().rstrip(".").lower()
        if not domain:
            fail("which domain signs? Pass --domain example.org (the domain of your From address)")
        if out.exists() and not force:
            fail(f"{out} already exists: pass --force to replace it (messages signed with the old key stop "
                 "verifying once its record is replaced)")
        pem, key = generate("rsa" if key_type == "rsa" else "ed25519", bits)
        try:
            _write_private(out, pem, force)
            public = serialization.load_pem_private_key(pem, password=None).public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            Path(f"{out}.pub").write_bytes(public)
        except OSError as exc:
            fail(f"cannot write {exc.filename}: {exc.strerror}")
        assert parse_key(pem) == key  # what the mailers will load is what the record says
        name = record_name(selector, domain)
        console.print(f"Wrote {out} (private, 0600) and {out}.pub ({key_type}"
                      f"{f', {bits} bits' if key_type == 'rsa' else ''}).", highlight=False)
        console.print(f"\nPublish this TXT record at {name}:\n", highlight=False)
        console.print(zone_line(name, key.record()), highlight=False, soft_wrap=True, markup=False)
        console.print("\nThen set, for `newsletter send` and `newsletter run`:\n", highlight=False)
        console.print(f"  NEWSLETTER_DKIM_KEY_FILE={out.resolve()}\n  NEWSLETTER_DKIM_SELECTOR={selector}\n"
                      f"  NEWSLETTER_DKIM_DOMAIN={domain}", highlight=False, markup=False)
        console.print("\nCheck it with `newsletter check SLUG --sender` once the record is live.", highlight=False)

    app.add_typer(dkim_app, name="dkim")
