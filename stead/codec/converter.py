"""The data converter every Stead client and worker connects with.

Without a keyring it is the pydantic converter. With one, payloads go through the
AES-GCM codec and failures carry their message and stack trace in an encoded
attribute (``DefaultFailureConverterWithEncodedAttributes``): an error text can quote
an argument, so leaving it in the clear would undo the encryption. Clients and
workers must agree on this, which is why both get it from ``connect``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
)

from stead.codec.aesgcm import ENCODING, AesGcmCodec
from stead.codec.errors import KeyringRequired
from stead.codec.keyring import Keyring, load_keyring
from stead.settings import Settings


def encrypted_data_converter(keyring: Keyring) -> DataConverter:
    """The pydantic converter with payloads and failure attributes encrypted under ``keyring``."""
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=AesGcmCodec(keyring),
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


class NoKeyringCodec(PayloadCodec):
    """The codec of a process without a keyring: plain payloads pass, encrypted ones are
    refused with what to set. Without it the SDK's converter fails on them with
    ``KeyError: Unknown payload encoding binary/encrypted``, which tells a user nothing."""

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return list(payloads)

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        if any(p.metadata.get("encoding") == ENCODING for p in payloads):
            raise KeyringRequired()
        return list(payloads)


PLAIN_CONVERTER = dataclasses.replace(pydantic_data_converter, payload_codec=NoKeyringCodec())


def data_converter(settings: Settings) -> DataConverter:
    """Encrypted when ``settings.codec_keyring`` is set; a bad keyring fails here, at start."""
    if settings.codec_keyring is None:
        return PLAIN_CONVERTER
    return encrypted_data_converter(load_keyring(settings.codec_keyring, settings.codec_active_key))
