"""WeCom WXBizMsgCrypt / WXBizJsonMsgCrypt compatible crypto (wecom-channels.md §5).

Used by AI bot HTTP callbacks (JSON envelope, receive id ``""``) and self-built app callbacks
(receive id = CorpID). Plaintext layout before encryption:
``random(16) ‖ uint32_be(len(msg)) ‖ msg ‖ receive_id``, PKCS#7-padded to a multiple of 32,
AES-256-CBC with ``key = b64decode(EncodingAESKey + "=")`` and ``iv = key[:16]``, then base64.

Every failure raises `WeComCryptoError` whose message never contains the key, the token or any
plaintext, so it is safe to log.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import struct
import time
from typing import TypedDict

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

AES_KEY_CHARS = 43  # EncodingAESKey length as shown in the WeCom admin console
PAD_BLOCK = 32  # WeCom pads to 32, not to the AES block size of 16
RANDOM_BYTES = 16
_AES_BLOCK = 16
_HEADER = RANDOM_BYTES + 4


class WeComCryptoError(Exception):
    """Signature, key or ciphertext problem. The message is safe to log."""


class ReplyEnvelope(TypedDict):
    """Encrypted passive reply of an AI bot HTTP callback (§2.4)."""

    encrypt: str
    msgsignature: str
    timestamp: int
    nonce: str


def signature(token: str, timestamp: str | int, nonce: str, encrypted: str) -> str:
    """``sha1("".join(sorted([token, timestamp, nonce, encrypted])))`` as lowercase hex."""
    parts = sorted([token, str(timestamp), nonce, encrypted])
    return hashlib.sha1("".join(parts).encode("utf-8")).hexdigest()


def restore_plus(value: str) -> str:
    """Undo a form decoder that turned ``+`` into a space in a base64 query value (§5)."""
    return value.replace(" ", "+")


class WeComCrypto:
    """One bot's token + EncodingAESKey (+ receive id). Stateless apart from the key."""

    def __init__(self, token: str, encoding_aes_key: str, receive_id: str = "") -> None:
        if len(encoding_aes_key) != AES_KEY_CHARS:
            raise WeComCryptoError(f"EncodingAESKey must be {AES_KEY_CHARS} characters")
        try:
            key = base64.b64decode(encoding_aes_key + "=", validate=True)
        except (binascii.Error, ValueError):
            raise WeComCryptoError("EncodingAESKey is not valid base64") from None
        if len(key) != 32:  # pragma: no cover - 43 valid base64 chars always give 32 bytes
            raise WeComCryptoError("EncodingAESKey does not decode to 32 bytes")
        self._token = token
        self._key = key
        self._receive_id = receive_id

    def __repr__(self) -> str:  # never show the secrets
        return f"WeComCrypto(receive_id={self._receive_id!r})"

    # ------------------------------------------------------------------ signature

    def signature(self, timestamp: str | int, nonce: str, encrypted: str) -> str:
        return signature(self._token, timestamp, nonce, encrypted)

    def verify(self, msg_signature: str, timestamp: str | int, nonce: str, encrypted: str) -> bool:
        expected = self.signature(timestamp, nonce, encrypted)
        return hmac.compare_digest(expected.encode("ascii"), msg_signature.encode("utf-8", "replace"))

    # ------------------------------------------------------------------ AES

    def _cipher(self) -> Cipher[modes.CBC]:
        return Cipher(algorithms.AES(self._key), modes.CBC(self._key[:16]))

    def encrypt(self, plaintext: str, random: bytes | None = None) -> str:
        """Encrypt ``plaintext``; ``random`` (16 bytes) is for reproducible tests only."""
        if random is None:
            random = os.urandom(RANDOM_BYTES)
        elif len(random) != RANDOM_BYTES:
            raise WeComCryptoError(f"random prefix must be {RANDOM_BYTES} bytes")
        msg = plaintext.encode("utf-8")
        body = random + struct.pack(">I", len(msg)) + msg + self._receive_id.encode("utf-8")
        pad = PAD_BLOCK - len(body) % PAD_BLOCK
        body += bytes([pad]) * pad
        enc = self._cipher().encryptor()
        return base64.b64encode(enc.update(body) + enc.finalize()).decode("ascii")

    def decrypt(self, encrypted: str) -> str:
        try:
            raw = base64.b64decode(encrypted, validate=True)
        except (binascii.Error, ValueError):
            raise WeComCryptoError("ciphertext is not valid base64") from None
        if not raw or len(raw) % _AES_BLOCK:
            raise WeComCryptoError("ciphertext length is not a multiple of the AES block size")
        dec = self._cipher().decryptor()
        plain = dec.update(raw) + dec.finalize()
        pad = plain[-1]
        if not 1 <= pad <= PAD_BLOCK or pad > len(plain) or plain[-pad:] != bytes([pad]) * pad:
            raise WeComCryptoError("bad padding (wrong key or corrupted ciphertext)")
        content = plain[:-pad]
        if len(content) < _HEADER:
            raise WeComCryptoError("decrypted message is truncated")
        (length,) = struct.unpack(">I", content[RANDOM_BYTES:_HEADER])
        if _HEADER + length > len(content):
            raise WeComCryptoError("message length field exceeds the decrypted data")
        msg = content[_HEADER : _HEADER + length]
        if self._receive_id and content[_HEADER + length :] != self._receive_id.encode("utf-8"):
            raise WeComCryptoError("receive id mismatch")
        try:
            return msg.decode("utf-8")
        except UnicodeDecodeError:
            raise WeComCryptoError("decrypted message is not UTF-8") from None

    def decrypt_verified(self, msg_signature: str, timestamp: str | int, nonce: str, encrypted: str) -> str:
        """Check the signature first, then decrypt (URL verification: ``encrypted`` = echostr)."""
        if not self.verify(msg_signature, timestamp, nonce, encrypted):
            raise WeComCryptoError("signature mismatch")
        return self.decrypt(encrypted)

    # ------------------------------------------------------------------ JSON envelope (AI bot)

    def open_envelope(self, msg_signature: str, timestamp: str | int, nonce: str, body: bytes | str) -> str:
        """Verify and decrypt a callback body ``{"encrypt": "<base64>"}``; returns the plaintext JSON."""
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise WeComCryptoError("callback body is not JSON") from None
        encrypted = data.get("encrypt") if isinstance(data, dict) else None
        if not isinstance(encrypted, str) or not encrypted:
            raise WeComCryptoError("callback body has no 'encrypt' field")
        return self.decrypt_verified(msg_signature, timestamp, nonce, encrypted)

    def seal_reply(
        self,
        plaintext: str,
        nonce: str,
        timestamp: int | None = None,
        random: bytes | None = None,
    ) -> ReplyEnvelope:
        """Encrypted passive-reply envelope; ``nonce`` is the one from the request URL (§2.4)."""
        ts = int(time.time()) if timestamp is None else timestamp
        encrypted = self.encrypt(plaintext, random)
        return ReplyEnvelope(
            encrypt=encrypted,
            msgsignature=self.signature(ts, nonce, encrypted),
            timestamp=ts,
            nonce=nonce,
        )

    def seal_reply_json(self, payload: object, nonce: str, timestamp: int | None = None) -> str:
        """`seal_reply` for a JSON payload (non-ASCII kept as is), serialised as the response body."""
        plaintext = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        return json.dumps(self.seal_reply(plaintext, nonce, timestamp))
