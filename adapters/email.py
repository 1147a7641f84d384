"""``email.send``: one message through the worker's SMTP relay (aiosmtplib).

SMTP has no idempotent submit, so the idempotency key travels with the message:
the ``Message-ID`` is derived from it (``<stead.<hash>@<sender domain>>``), identical
on every attempt of the step. Mail stores and relays that deduplicate on Message-ID
(Gmail, most list servers) show a retried send once, and anyone can tell two
deliveries of one step apart from two steps. A crash between the relay's "250 OK"
and the activity's completion can therefore resend, but never as a different
message; that residual risk is why the operation is rated ``medium``.

Who the mail is from is the worker's configuration, not the plan's: each tenant has
a configured sender (``STEAD_EMAIL_SENDERS``), so a plan cannot spoof another
address. The relay's credentials live only on the worker that runs this adapter;
with ``stead worker --adapters email`` that is an edge worker of its own.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate
from typing import Annotated, Literal

import aiosmtplib
from pydantic import AfterValidator, Field, SecretStr

from stead.contracts.base import Closed
from stead.egress import Destination, mail_destinations
from stead.operations.base import AdapterError, Operation, OperationContext
from stead.settings import Settings

BODY_LIMIT = 512 * 1024
MAX_RECIPIENTS = 50
# A dot-atom address (RFC 5322 section 3.4.1 without quoted local parts or literals):
# enough for real mailboxes, and no character that could break out of a header.
_ADDRESS = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)


def _address(value: str) -> str:
    if len(value) > 254 or not _ADDRESS.match(value):
        raise ValueError(f"{value!r} is not a plain email address like ada@example.com")
    return value


def _one_line(value: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError("line breaks are refused in headers (they would inject new headers)")
    return value


EmailAddress = Annotated[str, AfterValidator(_address)]
HeaderText = Annotated[str, AfterValidator(_one_line)]


class EmailArgs(Closed):
    to: list[EmailAddress] = Field(min_length=1, max_length=MAX_RECIPIENTS)
    cc: list[EmailAddress] = Field(default_factory=list, max_length=MAX_RECIPIENTS)
    bcc: list[EmailAddress] = Field(default_factory=list, max_length=MAX_RECIPIENTS)
    subject: HeaderText = Field(min_length=1, max_length=998)
    text: str = Field(max_length=BODY_LIMIT, description="Plain-text body.")
    html: str | None = Field(default=None, max_length=BODY_LIMIT, description="Optional HTML.")
    reply_to: EmailAddress | None = None
    sender_name: HeaderText | None = Field(
        default=None, max_length=200, description="Display name for the tenant's sender."
    )


class EmailResult(Closed):
    message_id: str
    accepted: list[str]
    refused: dict[str, str] = Field(
        default_factory=dict, description="Recipients the relay refused, with its answer."
    )
    response: str = Field(description="The relay's answer to the message data.")


@dataclass(frozen=True)
class SmtpRelay:
    """The worker's relay and the tenants' senders, from settings; the password stays masked."""

    host: str
    port: int
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password: SecretStr | None = field(default=None, repr=False)
    senders: dict[str, str] = field(default_factory=dict)
    default_sender: str | None = None
    timeout_seconds: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpRelay | None:
        if not settings.smtp_host:
            return None
        return cls(
            host=settings.smtp_host,
            port=settings.smtp_port,
            security=settings.smtp_security,
            username=settings.smtp_username,
            password=settings.smtp_password,
            senders=dict(settings.email_senders),
            default_sender=settings.email_default_sender,
        )

    def sender_for(self, tenant: str) -> str:
        sender = self.senders.get(tenant) or self.default_sender
        if not sender:
            raise AdapterError(
                f"tenant {tenant} has no email sender on this worker; set "
                f'STEAD_EMAIL_SENDERS=\'{{"{tenant}": "ops@example.com"}}\' '
                "or STEAD_EMAIL_DEFAULT_SENDER",
                retryable=False,
                details={"reason": "no_sender"},
            )
        return sender


def message_id(idempotency_key: str, sender: str) -> str:
    """The Message-ID every attempt of one step uses; opaque, so it leaks no run id."""
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:40]
    return f"<stead.{digest}@{sender.rsplit('@', 1)[1]}>"


def build_message(args: EmailArgs, sender: str, msg_id: str) -> EmailMessage:
    message = EmailMessage()
    local, domain = sender.rsplit("@", 1)
    message["From"] = Address(display_name=args.sender_name or "", username=local, domain=domain)
    message["To"] = ", ".join(args.to)
    if args.cc:
        message["Cc"] = ", ".join(args.cc)
    if args.reply_to:
        message["Reply-To"] = args.reply_to
    message["Subject"] = args.subject
    message["Message-ID"] = msg_id
    message["Date"] = formatdate(usegmt=True)
    # RFC 3834: tells auto-responders not to answer a machine.
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(args.text)
    if args.html is not None:
        message.add_alternative(args.html, subtype="html")
    return message


async def send(ctx: OperationContext, args: EmailArgs) -> EmailResult:
    relay = _relay(ctx)
    sender = relay.sender_for(ctx.tenant)
    msg_id = message_id(ctx.idempotency_key, sender)
    message = build_message(args, sender, msg_id)
    recipients = list(dict.fromkeys([*args.to, *args.cc, *args.bcc]))
    try:
        refused, response = await aiosmtplib.send(
            message,
            sender=sender,
            recipients=recipients,
            hostname=relay.host,
            port=relay.port,
            username=relay.username,
            password=relay.password.get_secret_value() if relay.password else None,
            use_tls=relay.security == "tls",
            start_tls=relay.security == "starttls",
            timeout=relay.timeout_seconds,
        )
    except aiosmtplib.SMTPRecipientsRefused as exc:
        answers = {r.recipient: f"{r.code} {r.message}" for r in exc.recipients}
        raise AdapterError(
            f"the relay refused every recipient of {msg_id}: {_summary(answers)}",
            retryable=any(400 <= r.code < 500 for r in exc.recipients),
            details={"reason": "recipients_refused", "refused": answers},
        ) from None
    except aiosmtplib.SMTPResponseException as exc:
        raise AdapterError(
            f"the relay {relay.host}:{relay.port} answered {exc.code} {exc.message} to "
            f"{msg_id}; " + _advice(exc.code),
            retryable=400 <= exc.code < 500,
            details={"reason": type(exc).__name__, "code": exc.code},
        ) from None
    except aiosmtplib.SMTPNotSupported as exc:
        raise AdapterError(
            f"the relay {relay.host}:{relay.port} does not support what this worker requires "
            f"({exc}); check STEAD_SMTP_SECURITY",
            retryable=False,
            details={"reason": "not_supported"},
        ) from None
    except (aiosmtplib.SMTPException, OSError) as exc:
        raise AdapterError(
            f"could not reach the relay {relay.host}:{relay.port} ({type(exc).__name__}: {exc}); "
            f"a retry resends with the same Message-ID {msg_id}",
            retryable=True,
            details={"reason": type(exc).__name__},
        ) from None
    answers = {rcpt: f"{r.code} {r.message}" for rcpt, r in refused.items()}
    return EmailResult(
        message_id=msg_id,
        accepted=[r for r in recipients if r not in refused],
        refused=answers,
        response=response,
    )


def destinations(args: EmailArgs) -> list[Destination]:
    """The recipients' domains (to, cc, bcc, and reply-to): where the message goes."""
    reply = [args.reply_to] if args.reply_to else []
    return mail_destinations([*args.to, *args.cc, *args.bcc, *reply])


def _advice(code: int) -> str:
    if code == 535 or code == 530:
        return "check STEAD_SMTP_USERNAME and STEAD_SMTP_PASSWORD on the email worker"
    if 400 <= code < 500:
        return "a temporary refusal; Temporal retries with the same Message-ID"
    return "a permanent refusal; retrying would get the same answer"


def _summary(answers: dict[str, str]) -> str:
    return "; ".join(f"{rcpt}: {answer}" for rcpt, answer in sorted(answers.items()))


def _relay(ctx: OperationContext) -> SmtpRelay:
    relay = getattr(ctx.resources, "smtp", None)
    if not isinstance(relay, SmtpRelay):
        raise AdapterError(
            "this worker has no SMTP relay for email.send: set STEAD_SMTP_HOST on the worker "
            "that runs the email adapter (see STEAD_ADAPTER_QUEUES)",
            retryable=False,
            details={"reason": "no_relay"},
        )
    return relay


EMAIL_SEND: Operation[EmailArgs, EmailResult] = Operation(
    name="email.send",
    description=(
        "Send one email from the tenant's configured sender through the SMTP relay. The "
        "Message-ID is derived from the step's idempotency key, so a retry is the same message."
    ),
    args_model=EmailArgs,
    result_model=EmailResult,
    run=send,
    side_effect="external",
    risk="medium",
    idempotency="key",
    scopes=("email:send",),
    timeout_seconds=60.0,
    max_attempts=5,
    rate_limit_per_minute=60,
    destinations=destinations,
)
