"""Payload encryption: an AES-GCM ``PayloadCodec``, its keyring, and the codec server.

Turned on by ``STEAD_CODEC_KEYRING``: every client and worker built by
``stead.temporal.connect`` then encrypts workflow inputs, results, activity arguments,
signals, queries and failure messages before they reach the Temporal server. Search
attributes stay plaintext by Temporal's design (the server indexes them), so they
must never carry anything sensitive.
"""

from stead.codec.aesgcm import ENCODING, KEY_ID_METADATA, AesGcmCodec
from stead.codec.converter import data_converter, encrypted_data_converter
from stead.codec.errors import CodecError, KeyringError, PayloadDecryptFailed, UnknownKeyId
from stead.codec.keyring import Keyring, add_key, load_keyring

__all__ = [
    "ENCODING",
    "KEY_ID_METADATA",
    "AesGcmCodec",
    "CodecError",
    "Keyring",
    "KeyringError",
    "PayloadDecryptFailed",
    "UnknownKeyId",
    "add_key",
    "data_converter",
    "encrypted_data_converter",
    "load_keyring",
]
