"""Pick the delivery backend named by NEWSLETTER_MAILER."""

from __future__ import annotations

from newsletter.config import ConfigError, Settings
from newsletter.deliver.mailer import Mailer


def make_mailer(settings: Settings) -> Mailer:
    if settings.mailer == "outbox":
        from newsletter.deliver.outbox import OutboxMailer

        return OutboxMailer(settings.outbox_dir)
    if settings.mailer == "smtp":
        if not settings.smtp_url:
            raise ConfigError("NEWSLETTER_MAILER=smtp needs NEWSLETTER_SMTP_URL (e.g. smtp://user:pass@host:587)")
        from newsletter.deliver.smtp import SMTPMailer

        return SMTPMailer.from_url(settings.smtp_url)
    if settings.mailer == "sendgrid":
        if not settings.sendgrid_api_key:
            raise ConfigError("NEWSLETTER_MAILER=sendgrid needs SENDGRID_API_KEY")
        from newsletter.deliver.sendgrid import SendGridMailer

        return SendGridMailer(api_key=settings.sendgrid_api_key, host=settings.sendgrid_api_host)
    raise ConfigError(f"NEWSLETTER_MAILER: unknown mailer {settings.mailer!r}")
