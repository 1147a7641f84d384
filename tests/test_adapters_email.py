"""``email.send`` through a real SMTP server (aiosmtpd) the test starts on 127.0.0.1."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from adapters.email import SmtpRelay, message_id
from adapters.registry import AdapterResources, default_catalog
from stead.operations.base import AdapterError, OperationContext
from stead.operations.catalog import InvalidArguments
from tests.smtp_peer import Mailbox, free_port, smtp_server

CATALOG = default_catalog(plugins=False)
OP = CATALOG.get("email.send")
SENDER = "ops@acme.test"


@pytest.fixture(scope="module")
def smtp() -> Iterator[Mailbox]:
    with smtp_server() as box:
        yield box


@pytest.fixture
def resources(smtp: Mailbox) -> AdapterResources:
    relay = SmtpRelay(host="127.0.0.1", port=smtp.port, security="none", senders={"acme": SENDER})
    return AdapterResources(smtp=relay)


def _ctx(resources: AdapterResources, tenant: str = "acme") -> OperationContext:
    wf = f"wf-{uuid.uuid4().hex[:8]}"
    return OperationContext(
        tenant=tenant,
        principal="user:ada",
        workflow_id=wf,
        step_id="mail",
        idempotency_key=f"{wf}/mail",
        resources=resources,
    )


async def _send(ctx: OperationContext, **args: Any) -> Any:
    return await OP.run(ctx, CATALOG.parse_args("email.send", args))


def _rcpt() -> str:
    return f"u{uuid.uuid4().hex[:8]}@example.test"


async def test_a_message_is_delivered_from_the_tenants_sender(
    smtp: Mailbox, resources: AdapterResources
) -> None:
    box = smtp
    to, cc, bcc = _rcpt(), _rcpt(), _rcpt()
    ctx = _ctx(resources)
    result = await _send(
        ctx,
        to=[to],
        cc=[cc],
        bcc=[bcc],
        subject="Invoice 42",
        text="Please find it attached.",
        html="<p>Please find it attached.</p>",
        sender_name="Acme Ops",
    )
    assert result.message_id == message_id(ctx.idempotency_key, SENDER)
    assert sorted(result.accepted) == sorted([to, cc, bcc]) and result.refused == {}
    (message,) = box.to(to)
    assert message["Message-ID"] == result.message_id
    assert message["From"] == f"Acme Ops <{SENDER}>"
    assert (message["To"], message["Cc"], message["Subject"]) == (to, cc, "Invoice 42")
    assert message["Bcc"] is None and box.to(bcc) == [message]  # in the envelope only
    assert ctx.workflow_id not in result.message_id  # opaque: no run id leaks to recipients
    body = message.get_body(preferencelist=("plain",))
    assert body is not None and body.get_content().strip() == "Please find it attached."


async def test_every_attempt_of_a_step_is_the_same_message(
    smtp: Mailbox, resources: AdapterResources
) -> None:
    box = smtp
    to = _rcpt()
    ctx = _ctx(resources)
    first = await _send(ctx, to=[to], subject="s", text="t")
    again = await _send(ctx, to=[to], subject="s", text="t")
    other = await _send(_ctx(resources), to=[to], subject="s", text="t")
    assert first.message_id == again.message_id != other.message_id
    ids = [m["Message-ID"] for m in box.to(to)]
    assert ids == [first.message_id, first.message_id, other.message_id]


async def test_a_refused_recipient_is_reported_and_the_rest_delivered(
    smtp: Mailbox, resources: AdapterResources
) -> None:
    box = smtp
    good = _rcpt()
    result = await _send(_ctx(resources), to=[good, "nobody@refuse.test"], subject="s", text="t")
    assert result.accepted == [good]
    assert result.refused["nobody@refuse.test"].startswith("550")
    assert len(box.to(good)) == 1


@pytest.mark.parametrize(("domain", "retryable"), [("refuse.test", False), ("busy.test", True)])
async def test_all_recipients_refused_fails_with_the_relays_answer(
    resources: AdapterResources, domain: str, retryable: bool
) -> None:
    with pytest.raises(AdapterError) as caught:
        await _send(_ctx(resources), to=[f"a@{domain}"], subject="s", text="t")
    assert caught.value.retryable is retryable
    assert caught.value.details["reason"] == "recipients_refused"


async def test_an_unreachable_relay_is_retryable() -> None:
    relay = SmtpRelay(host="127.0.0.1", port=free_port(), security="none", senders={"acme": SENDER})
    with pytest.raises(AdapterError) as caught:
        await _send(_ctx(AdapterResources(smtp=relay)), to=[_rcpt()], subject="s", text="t")
    assert caught.value.retryable is True
    assert "same Message-ID" in caught.value.message


async def test_a_tenant_without_a_sender_is_refused(
    smtp: Mailbox, resources: AdapterResources
) -> None:
    box = smtp
    to = _rcpt()
    with pytest.raises(AdapterError, match="STEAD_EMAIL_SENDERS") as caught:
        await _send(_ctx(resources, "globex"), to=[to], subject="s", text="t")
    assert not caught.value.retryable
    assert box.to(to) == []


async def test_a_worker_without_a_relay_says_so() -> None:
    with pytest.raises(AdapterError, match="STEAD_SMTP_HOST"):
        await _send(_ctx(AdapterResources()), to=[_rcpt()], subject="s", text="t")


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({"to": ["not-an-address"], "subject": "s", "text": "t"}, "to.0"),
        ({"to": ["a@b.test"], "subject": "s\r\nBcc: victim@x.test", "text": "t"}, "subject"),
        ({"to": ["a@b.test>\r\nBcc: v@x.test"], "subject": "s", "text": "t"}, "to.0"),
        ({"to": [], "subject": "s", "text": "t"}, "to"),
        ({"to": ["a@b.test"], "subject": "s", "text": "t", "from": "ceo@acme.test"}, "from"),
        ({"to": ["a@b.test"], "subject": "s", "text": "t", "sender_name": "x\nBcc: y"}, "sender"),
    ],
)
def test_bad_arguments_fail_the_schema(args: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArguments) as caught:
        CATALOG.parse_args("email.send", args)
    assert field in str(caught.value)
