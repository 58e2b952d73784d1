"""The embedded default backend: one .eml file per recipient in a folder, nothing leaves the machine.

Files are written atomically (temporary name, then rename) so a crash never leaves half a message.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from email.utils import make_msgid
from pathlib import Path
from typing import TYPE_CHECKING

from newsletter.deliver.mailer import Message, PushResult, Recipient
from newsletter.deliver.message import MessageBuildError, build_email, message_domain

if TYPE_CHECKING:  # dkimpy and dnspython load only when a key is configured
    from newsletter.deliver.dkim import DkimSigner

_UNSAFE = re.compile(r"[^A-Za-z0-9@._+-]")


def safe_name(address: str) -> str:
    return _UNSAFE.sub("_", address.lower())[:200]


class OutboxMailer:
    name = "outbox"

    def __init__(self, root: Path, dkim: DkimSigner | None = None) -> None:
        self.root = Path(root)
        self.dkim = dkim

    def ready(self, from_address: str) -> None:
        """Before a send starts: DkimError when its messages could not be signed so that receivers accept them."""
        if self.dkim is not None:
            self.dkim.ready(from_address)

    def folder_for(self, message: Message) -> Path:
        newsletter = message.custom_args.get("newsletter", "newsletter")
        issue = message.custom_args.get("issue_number")
        sub = "test" if message.custom_args.get("test") else (f"issue-{issue}" if issue else "messages")
        if message.custom_args.get("kind") == "welcome":
            sub = "welcome"  # beside the confirmation email in messages/, not over it
        return self.root / safe_name(newsletter) / sub

    def push(self, message: Message, recipients: Sequence[Recipient]) -> PushResult:
        folder = self.folder_for(message)
        folder.mkdir(parents=True, exist_ok=True)
        domain = message_domain(message.from_address)
        ids: dict[str, str] = {}
        failed: dict[str, str] = {}
        for recipient in recipients:
            message_id = make_msgid(domain=domain)
            try:
                email = build_email(message, recipient, message_id=message_id)
            except MessageBuildError as exc:
                failed[recipient.email] = str(exc)
                continue
            data = email.as_bytes()
            if self.dkim is not None:
                data = self.dkim.sign(data, message.from_address)
            path = folder / f"{safe_name(recipient.email)}.eml"
            tmp = path.with_suffix(".eml.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
            ids[recipient.email] = message_id
        return PushResult(provider_message_id=None, message_ids=ids, failed=failed)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass
