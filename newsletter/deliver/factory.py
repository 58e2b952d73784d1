"""Pick the delivery backend named by NEWSLETTER_MAILER."""

from __future__ import annotations

from typing import TYPE_CHECKING

from newsletter.config import ConfigError, Settings
from newsletter.deliver.mailer import Mailer

if TYPE_CHECKING:
    from newsletter.deliver.dkim import DkimSigner


def make_dkim(settings: Settings) -> DkimSigner | None:
    """The DKIM signer NEWSLETTER_DKIM_KEY_FILE asks for (None without it); ConfigError for a key it cannot use."""
    if settings.dkim_key_file is None:
        return None
    from newsletter.deliver.dkim import DkimKeyError, signer_from_settings

    try:
        return signer_from_settings(settings.dkim_key_file, settings.dkim_selector, settings.dkim_domain,
                                    settings.dns_servers)
    except DkimKeyError as exc:
        raise ConfigError(f"NEWSLETTER_DKIM_KEY_FILE: {exc}") from None


# Each NEWSLETTER_MAILER's module, imported by make_mailer when it is asked for (a worker preloads the one it
# will use: newsletter.scale.tasks.warm_up). Kept beside make_mailer, which names the same modules.
BACKEND_MODULES = {"outbox": "newsletter.deliver.outbox", "smtp": "newsletter.deliver.smtp",
                   "sendgrid": "newsletter.deliver.sendgrid"}


def make_mailer(settings: Settings) -> Mailer:
    if settings.mailer == "outbox":
        from newsletter.deliver.outbox import OutboxMailer

        return OutboxMailer(settings.outbox_dir, dkim=make_dkim(settings))
    if settings.mailer == "smtp":
        if not settings.smtp_url:
            raise ConfigError("NEWSLETTER_MAILER=smtp needs NEWSLETTER_SMTP_URL (e.g. smtp://user:pass@host:587)")
        from newsletter.deliver.smtp import SMTPMailer

        return SMTPMailer.from_url(settings.smtp_url, dkim=make_dkim(settings))
    if settings.mailer == "sendgrid":
        if not settings.sendgrid_api_key:
            raise ConfigError("NEWSLETTER_MAILER=sendgrid needs SENDGRID_API_KEY")
        from newsletter.deliver.sendgrid import SendGridMailer

        return SendGridMailer(api_key=settings.sendgrid_api_key, host=settings.sendgrid_api_host)
    raise ConfigError(f"NEWSLETTER_MAILER: unknown mailer {settings.mailer!r}")
