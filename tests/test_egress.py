"""The pieces of invariant 10 that need no stack: destinations, the egress grammar,
secrets bound to destinations in both backends, provenance of plan arguments, and
redaction of a secret's encoded forms."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Literal
from urllib.parse import quote, quote_plus

import pytest
from pydantic import JsonValue, SecretStr

from adapters.registry import default_catalog
from stead.contracts.run import Plan, PlannerInfo, Step, StepExecution
from stead.egress import (
    Destination,
    DestinationError,
    EgressEntryError,
    allowed_by,
    check_entry,
    mail_destinations,
    url_destination,
)
from stead.operations.catalog import InvalidArguments
from stead.planning.provenance import step_provenance
from stead.secrets import (
    REDACTED,
    EnvSecretBackend,
    FileSecretBackend,
    SecretNotBound,
    Secrets,
    redact,
    redact_json,
)
from stead.secrets.redact import encoded_forms

CATALOG = default_catalog()


def url(scheme: str, host: str, port: int) -> Destination:
    return Destination(kind="url", scheme=scheme, host=host, port=port)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://API.Example.COM./v1?q=1", url("https", "api.example.com", 443)),
        ("http://api.example.com/x", url("http", "api.example.com", 80)),
        ("https://api.example.com:8443/x", url("https", "api.example.com", 8443)),
        ("https://bücher.example/x", url("https", "xn--bcher-kva.example", 443)),
        ("http://[::1]:9000/", url("http", "::1", 9000)),
        ("http://127.0.0.1:9/", url("http", "127.0.0.1", 9)),
    ],
)
def test_a_url_destination_is_normalised(text: str, expected: Destination) -> None:
    assert url_destination(text) == expected


def test_a_url_without_host_or_with_a_bad_port_has_no_destination() -> None:
    with pytest.raises(DestinationError, match="names no host"):
        url_destination("https:///x")
    with pytest.raises(DestinationError, match="invalid port"):
        url_destination("https://api.example.com:99999/")


def test_mail_destinations_are_the_distinct_recipient_domains() -> None:
    got = mail_destinations(["a@Example.com", "b@example.com.", "c@other.example"])
    assert [d.host for d in got] == ["example.com", "other.example"]
    assert got[0].label == "mail:example.com"


@pytest.mark.parametrize(
    ("entry", "destination", "allowed"),
    [
        ("api.example.com", url("https", "api.example.com", 8443), True),
        ("API.example.com.", url("http", "api.example.com", 80), True),
        ("api.example.com", url("https", "api.example.com.evil.net", 443), False),
        ("*.example.org", url("https", "a.b.example.org", 443), True),
        ("*.example.org", url("https", "example.org", 443), False),
        ("*.example.org", url("https", "evilexample.org", 443), False),
        ("https://hooks.example.com", url("https", "hooks.example.com", 443), True),
        ("https://hooks.example.com", url("http", "hooks.example.com", 443), False),
        ("https://hooks.example.com:8443", url("https", "hooks.example.com", 8443), True),
        ("https://hooks.example.com:8443", url("https", "hooks.example.com", 443), False),
        ("mail:example.com", Destination(kind="mail", host="example.com"), True),
        ("mail:*.example.com", Destination(kind="mail", host="eu.example.com"), True),
        ("example.com", Destination(kind="mail", host="example.com"), False),
        ("mail:example.com", url("https", "example.com", 443), False),
        ("*", url("https", "anything.example", 443), True),
    ],
)
def test_the_egress_grammar(entry: str, destination: Destination, allowed: bool) -> None:
    # The same table is pinned for OPA in policies/stead/step_test.rego.
    assert allowed_by([check_entry(entry)], destination) is allowed


@pytest.mark.parametrize("entry", ["", "ftp://x.example", "*.", "a*.example.com", "https://h:x"])
def test_a_malformed_entry_is_refused_with_a_reason(entry: str) -> None:
    with pytest.raises(EgressEntryError):
        check_entry(entry)


def test_operations_state_their_destinations_and_secret_refs() -> None:
    http = CATALOG.get("http.request")
    args = CATALOG.parse_args(
        "http.request",
        {
            "method": "GET",
            "url": "https://API.example.com/x",
            "auth": {"secret": "secret://acme/http/t"},
        },
    )
    assert http.egress("acme", args) == (
        [url("https", "api.example.com", 443)],
        ["secret://acme/http/t"],
    )
    hook = CATALOG.get("webhook.post")
    wargs = CATALOG.parse_args("webhook.post", {"url": "http://127.0.0.1:9/h", "event": "e"})
    assert hook.egress("acme", wargs) == (
        [url("http", "127.0.0.1", 9)],
        ["secret://acme/webhook/signing_key"],
    )
    mail = CATALOG.get("email.send")
    margs = CATALOG.parse_args(
        "email.send",
        {"to": ["a@example.com"], "bcc": ["b@leak.example"], "subject": "s", "text": "t"},
    )
    assert [d.label for d in mail.egress("acme", margs)[0]] == [
        "mail:example.com",
        "mail:leak.example",
    ]
    records = CATALOG.get("records.get")
    assert records.egress("acme", CATALOG.parse_args("records.get", {"key": "k"})) == ([], [])


def test_every_external_operation_states_destinations() -> None:
    # The shipped policy denies an external operation without them; this keeps ours honest.
    missing = [
        op.name
        for op in (CATALOG.get(n) for n in CATALOG.names())
        if op.side_effect == "external" and op.destinations is None
    ]
    assert missing == []


# Secrets bound to destinations ------------------------------------------------------

API = url("https", "api.example.com", 443)
REF = "secret://acme/http/api_token"


async def test_env_secret_goes_only_to_its_declared_destinations() -> None:
    env = {
        "STEAD_SECRET__ACME__HTTP__API_TOKEN": "v",
        "STEAD_SECRET__ACME__HTTP__API_TOKEN__DESTINATIONS": "api.example.com, mail:example.com",
    }
    store = Secrets([EnvSecretBackend(env)])
    assert (await store.get(REF, "acme", destination=API)).get_secret_value() == "v"
    with pytest.raises(SecretNotBound, match=r"may not be sent to https://evil\.example:443"):
        await store.get(REF, "acme", destination=url("https", "evil.example", 443))
    # Without a destination (a value used only on the worker) no binding applies.
    assert (await store.get(REF, "acme")).get_secret_value() == "v"


async def test_a_secret_without_destinations_is_refused_naming_where_to_declare_them() -> None:
    store = Secrets([EnvSecretBackend({"STEAD_SECRET__ACME__HTTP__API_TOKEN": "value-123"})])
    with pytest.raises(SecretNotBound) as caught:
        await store.get(REF, "acme", destination=API)
    assert "STEAD_SECRET__ACME__HTTP__API_TOKEN__DESTINATIONS" in caught.value.message
    assert "value-123" not in caught.value.message


def _write(path: Path, text: str, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_text(text)
    path.chmod(mode)


async def test_file_secret_destinations_live_in_a_sidecar_with_the_same_checks(
    tmp_path: Path,
) -> None:
    tmp_path.chmod(0o700)
    _write(tmp_path / "acme" / "http" / "api_token", "v\n")
    store = Secrets([FileSecretBackend(tmp_path)])
    with pytest.raises(SecretNotBound, match=r"api_token\.destinations"):
        await store.get(REF, "acme", destination=API)
    sidecar = tmp_path / "acme" / "http" / "api_token.destinations"
    _write(sidecar, "# the partner API only\napi.example.com\n")
    assert (await store.get(REF, "acme", destination=API)).get_secret_value() == "v"
    sidecar.chmod(0o644)  # anyone who can rewrite it could redirect the credential
    with pytest.raises(Exception, match="mode 0644"):
        await store.get(REF, "acme", destination=API)


# Provenance --------------------------------------------------------------------------


def _plan(
    kind: Literal["playbook", "llm"], *steps: Step, recalled: int = 0, **execution: StepExecution
) -> Plan:
    return Plan(
        plan_id="p",
        plan_hash="h",
        steps=steps,
        execution=execution,
        planner=PlannerInfo(kind=kind, recalled=recalled),
    )


CALL = Step(
    id="call",
    operation="http.request",
    args={
        "method": "POST",
        "url": "https://api.example.com",
        "json": {"$ref": "steps.read.output"},
    },
    depends_on=("read",),
)


def test_playbook_arguments_from_a_plain_step_are_untainted() -> None:
    plan = _plan("playbook", Step(id="read", operation="records.get", args={"key": "k"}), CALL)
    got = step_provenance(plan, "call")
    assert got.planner == "playbook" and got.tainted == ()
    assert got.args == {"json": ("step:read",)}


def test_arguments_from_a_memory_read_are_tainted_memory() -> None:
    plan = _plan(
        "playbook",
        Step(id="read", operation="content.brief", args={}),
        CALL,
        read=StepExecution(scopes=("memory:read",)),
    )
    assert step_provenance(plan, "call").tainted == ("memory",)


def test_taint_follows_refs_through_an_llm_step() -> None:
    plan = _plan(
        "playbook",
        Step(id="mem", operation="memory.get", args={}),
        Step(id="read", operation="llm.generate", args={"context": {"$ref": "steps.mem.output"}}),
        CALL,
    )
    assert step_provenance(plan, "call").tainted == ("llm", "memory")


def test_a_deterministic_step_does_not_pass_on_memory_it_read() -> None:
    # As the commerce playbook does: memory.history feeds a compare, the compare a fix.
    plan = _plan(
        "playbook",
        Step(id="mem", operation="memory.history", args={}),
        Step(id="read", operation="commerce.reconcile", args={"h": {"$ref": "steps.mem.output"}}),
        CALL,
    )
    got = step_provenance(plan, "call")
    assert got.tainted == () and got.args == {"json": ("step:read",)}


def test_an_llm_plan_taints_every_argument_and_recalled_memory_adds_memory() -> None:
    plain = _plan("llm", Step(id="read", operation="records.get", args={}), CALL)
    assert step_provenance(plain, "read").tainted == ("llm",)
    recalled = _plan("llm", Step(id="read", operation="records.get", args={}), CALL, recalled=2)
    assert step_provenance(recalled, "read").tainted == ("llm", "memory")
    assert step_provenance(recalled, "read").recalled is True


def test_a_ref_to_a_step_outside_the_plan_is_unknown() -> None:
    assert step_provenance(_plan("playbook", CALL), "call").tainted == ("unknown",)


# Redaction of encoded forms ------------------------------------------------------------

SECRET = 'sk/live+ab=cd~é12"q'


def _lower_hex(text: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), text)


@pytest.mark.parametrize(
    "form",
    [
        pytest.param(json.dumps(SECRET)[1:-1], id="json-ascii"),
        pytest.param(json.dumps(SECRET, ensure_ascii=False)[1:-1], id="json-utf8"),
        pytest.param(json.dumps(SECRET)[1:-1].replace("/", "\\/"), id="json-slash"),
        pytest.param("".join(f"\\u{ord(c):04x}" for c in SECRET), id="json-every-char"),
        pytest.param(quote(SECRET, safe=""), id="quote"),
        pytest.param(quote(SECRET), id="quote-keep-slash"),
        pytest.param(quote_plus(SECRET), id="quote-plus"),
        pytest.param(_lower_hex(quote(SECRET, safe="")), id="quote-lower-hex"),
        pytest.param(base64.b64encode(SECRET.encode()).decode(), id="b64"),
        pytest.param(base64.b64encode(SECRET.encode()).decode().rstrip("="), id="b64-unpadded"),
        pytest.param(base64.urlsafe_b64encode(SECRET.encode()).decode(), id="b64url"),
        pytest.param(SECRET.encode().hex(), id="hex"),
        pytest.param(SECRET.encode().hex().upper(), id="hex-upper"),
    ],
)
def test_each_encoded_form_is_redacted(form: str) -> None:
    assert form != SECRET
    text = f"echo: <{form}> end"
    assert redact(text, SecretStr(SECRET)) == f"echo: <{REDACTED}> end"


@pytest.mark.parametrize("prefix", [b"", b"a", b"ab", b"abc", b"Bearer "])
@pytest.mark.parametrize("encode", [base64.b64encode, base64.urlsafe_b64encode])
def test_base64_of_a_longer_string_is_redacted_at_every_alignment(prefix: bytes, encode) -> None:  # type: ignore[no-untyped-def]
    blob = encode(prefix + SECRET.encode() + b";tail").decode()
    out = redact(blob, SecretStr(SECRET))
    assert REDACTED in out
    # What is left around the mask decodes to no more than two bytes of the secret.
    left, _, right = out.partition(REDACTED)
    assert len(left) <= len(encode(prefix).decode()) + 4 and len(right) <= 16


def test_redact_json_masks_encoded_forms_in_keys_and_nested_values() -> None:
    hexed = SECRET.encode().hex()
    value: JsonValue = {hexed: [{"u": quote(SECRET, safe="")}], "ok": 1}
    assert redact_json(value, SecretStr(SECRET)) == {REDACTED: [{"u": REDACTED}], "ok": 1}


def test_a_tiny_secret_masks_its_encodings_but_no_fragment_shorter_than_four() -> None:
    assert redact("abc, 616263, YWJj", SecretStr("abc")) == f"{REDACTED}, {REDACTED}, {REDACTED}"
    assert all(len(form) >= 4 for form in encoded_forms("ab") if form != "ab")
    assert redact("WW Ja YQ", SecretStr("ab")) == "WW Ja YQ"


def test_invalid_arguments_still_fail_before_destinations_are_asked() -> None:
    with pytest.raises(InvalidArguments):
        CATALOG.parse_args("http.request", {"method": "GET", "url": "ftp://x.example/"})
