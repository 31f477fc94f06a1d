"""WeCom crypto against an independent pycryptodome implementation of the published algorithm."""

from __future__ import annotations

import base64
import hashlib
import json
import struct

import pytest
from Crypto.Cipher import AES
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.channels.wecom.crypto import WeComCrypto, WeComCryptoError, restore_plus, signature

AES_KEY = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"  # Tencent sample key (43 chars)
OTHER_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
TOKEN = "QDG6eK"
RANDOM = b"0123456789abcdef"


def ref_key(aes_key: str) -> bytes:
    return base64.b64decode(aes_key + "=")


def ref_encrypt(aes_key: str, msg: str, receive_id: str, random: bytes = RANDOM) -> str:
    """Independent WXBizMsgCrypt encryption (pycryptodome, manual PKCS#7 to 32)."""
    key = ref_key(aes_key)
    raw = msg.encode()
    body = random + struct.pack("!I", len(raw)) + raw + receive_id.encode()
    amount = 32 - (len(body) % 32)
    body += bytes([amount]) * amount
    return base64.b64encode(AES.new(key, AES.MODE_CBC, key[:16]).encrypt(body)).decode()


def ref_decrypt(aes_key: str, encrypted: str) -> tuple[bytes, str, str]:
    key = ref_key(aes_key)
    plain = AES.new(key, AES.MODE_CBC, key[:16]).decrypt(base64.b64decode(encrypted))
    plain = plain[: -plain[-1]]
    length = struct.unpack("!I", plain[16:20])[0]
    return plain[:16], plain[20 : 20 + length].decode(), plain[20 + length :].decode()


def raw_ciphertext(aes_key: str, plain: bytes) -> str:
    key = ref_key(aes_key)
    return base64.b64encode(AES.new(key, AES.MODE_CBC, key[:16]).encrypt(plain)).decode()


@pytest.mark.parametrize("receive_id", ["", "wx5823bf96d3bd56c7"])
@pytest.mark.parametrize("msg", ["hello", "", '{"msgtype":"text","text":{"content":"@机器人 step 123"}}'])
def test_reference_encrypt_our_decrypt(msg: str, receive_id: str) -> None:
    encrypted = ref_encrypt(AES_KEY, msg, receive_id)
    assert WeComCrypto(TOKEN, AES_KEY, receive_id).decrypt(encrypted) == msg


@pytest.mark.parametrize("receive_id", ["", "wx5823bf96d3bd56c7"])
def test_our_encrypt_reference_decrypt(receive_id: str) -> None:
    msg = "诊断报告：执行阶段失败 ✅❌ " * 7
    encrypted = WeComCrypto(TOKEN, AES_KEY, receive_id).encrypt(msg, random=RANDOM)
    assert ref_decrypt(AES_KEY, encrypted) == (RANDOM, msg, receive_id)
    # fixed random bytes: byte-identical to the reference
    assert encrypted == ref_encrypt(AES_KEY, msg, receive_id)


def test_padding_is_to_32_bytes() -> None:
    # 16 + 4 + 12 = 32 bytes of content: a full extra block of 32 pad bytes
    encrypted = WeComCrypto(TOKEN, AES_KEY).encrypt("x" * 12, random=RANDOM)
    assert len(base64.b64decode(encrypted)) == 64


def test_random_prefix_differs_per_call() -> None:
    c = WeComCrypto(TOKEN, AES_KEY)
    assert c.encrypt("same") != c.encrypt("same")


def test_signature_matches_hand_computed_sha1() -> None:
    timestamp, nonce, encrypted = "1409659813", "1372623149", "RypEvHKD8QQKFhvQ6QleEB4J58tiPdvo"
    # sorted lexicographically: "1372623149" < "1409659813" < "QDG6eK" < "RypEv..."
    expected = hashlib.sha1(b"13726231491409659813QDG6eKRypEvHKD8QQKFhvQ6QleEB4J58tiPdvo").hexdigest()
    assert signature(TOKEN, timestamp, nonce, encrypted) == expected
    crypto = WeComCrypto(TOKEN, AES_KEY)
    assert crypto.signature(1409659813, nonce, encrypted) == expected
    assert crypto.verify(expected, timestamp, nonce, encrypted)
    assert not crypto.verify(expected.upper(), timestamp, nonce, encrypted)


def test_decrypt_verified_and_url_verification_echostr() -> None:
    crypto = WeComCrypto(TOKEN, AES_KEY)
    echostr = ref_encrypt(AES_KEY, "6620413093", "")
    sig = hashlib.sha1("".join(sorted([TOKEN, "1700000000", "nonce1", echostr])).encode()).hexdigest()
    assert crypto.decrypt_verified(sig, "1700000000", "nonce1", echostr) == "6620413093"
    # a query decoder that turned '+' into ' ' is undone by restore_plus
    assert restore_plus(echostr.replace("+", " ")) == echostr


def test_tampered_signature_rejected() -> None:
    crypto = WeComCrypto(TOKEN, AES_KEY)
    encrypted = crypto.encrypt("hi")
    sig = crypto.signature("1", "n", encrypted)
    bad = ("0" if sig[0] != "0" else "1") + sig[1:]
    with pytest.raises(WeComCryptoError, match="signature"):
        crypto.decrypt_verified(bad, "1", "n", encrypted)
    with pytest.raises(WeComCryptoError, match="signature"):
        crypto.decrypt_verified(sig, "2", "n", encrypted)  # timestamp changed


def test_wrong_key_rejected() -> None:
    encrypted = ref_encrypt(AES_KEY, '{"msgtype":"text"}', "")
    with pytest.raises(WeComCryptoError) as info:
        WeComCrypto(TOKEN, OTHER_KEY).decrypt(encrypted)
    assert OTHER_KEY not in str(info.value) and AES_KEY not in str(info.value)


@pytest.mark.parametrize(
    "plain",
    [
        RANDOM + struct.pack("!I", 5) + b"hello" + b"\x00" * 7,  # pad byte 0
        RANDOM + struct.pack("!I", 5) + b"hello" + b"\x03" * 6 + b"\x21",  # pad 33 > 32
        RANDOM + struct.pack("!I", 5) + b"hello" + b"\x01\x02\x03\x04\x05\x06\x07",  # unequal pad bytes
    ],
)
def test_bad_padding_rejected(plain: bytes) -> None:
    assert len(plain) == 32
    with pytest.raises(WeComCryptoError, match="padding"):
        WeComCrypto(TOKEN, AES_KEY).decrypt(raw_ciphertext(AES_KEY, plain))


def test_length_field_beyond_data_rejected() -> None:
    plain = RANDOM + struct.pack("!I", 1000) + b"hello" + b"\x07" * 7
    with pytest.raises(WeComCryptoError, match="length"):
        WeComCrypto(TOKEN, AES_KEY).decrypt(raw_ciphertext(AES_KEY, plain))


def test_too_short_plaintext_rejected() -> None:
    plain = b"abcdefgh" + b"\x18" * 24  # 8 content bytes: less than random + length
    with pytest.raises(WeComCryptoError, match="truncated"):
        WeComCrypto(TOKEN, AES_KEY).decrypt(raw_ciphertext(AES_KEY, plain))


def test_truncated_ciphertext_rejected() -> None:
    raw = base64.b64decode(ref_encrypt(AES_KEY, "hello world " * 5, ""))
    crypto = WeComCrypto(TOKEN, AES_KEY)
    with pytest.raises(WeComCryptoError):
        crypto.decrypt(base64.b64encode(raw[:-5]).decode())  # not a block multiple
    with pytest.raises(WeComCryptoError):
        crypto.decrypt(base64.b64encode(raw[:-32]).decode())  # whole blocks cut: padding/length wrong
    with pytest.raises(WeComCryptoError):
        crypto.decrypt("")


@pytest.mark.parametrize("value", ["not base64!!", "abc", "Zm9v\x00YmFy", "漢字漢字"])
def test_non_base64_rejected(value: str) -> None:
    with pytest.raises(WeComCryptoError, match="base64"):
        WeComCrypto(TOKEN, AES_KEY).decrypt(value)


def test_wrong_receive_id_rejected() -> None:
    encrypted = ref_encrypt(AES_KEY, "hello", "wxcorp-a")
    with pytest.raises(WeComCryptoError, match="receive id"):
        WeComCrypto(TOKEN, AES_KEY, "wxcorp-b").decrypt(encrypted)
    # an empty receive id (internal AI bot) accepts whatever trails the message
    assert WeComCrypto(TOKEN, AES_KEY, "").decrypt(encrypted) == "hello"


@pytest.mark.parametrize("key", ["", "short", AES_KEY + "A", AES_KEY[:-1] + "!"])
def test_key_checked(key: str) -> None:
    with pytest.raises(WeComCryptoError, match="EncodingAESKey"):
        WeComCrypto(TOKEN, key)


def test_repr_hides_secrets() -> None:
    assert AES_KEY not in repr(WeComCrypto(TOKEN, AES_KEY)) and TOKEN not in repr(WeComCrypto(TOKEN, AES_KEY))


def test_reply_envelope_round_trip() -> None:
    crypto = WeComCrypto(TOKEN, AES_KEY)
    payload = {"msgtype": "stream", "stream": {"id": "s1", "finish": True, "content": "**报告** ✅"}}
    body = crypto.seal_reply_json(payload, "nonce-from-url", timestamp=1641002400)
    env = json.loads(body)
    assert set(env) == {"encrypt", "msgsignature", "timestamp", "nonce"}
    assert env["timestamp"] == 1641002400 and env["nonce"] == "nonce-from-url"
    expected_sig = hashlib.sha1(
        "".join(sorted([TOKEN, "1641002400", "nonce-from-url", env["encrypt"]])).encode()
    ).hexdigest()
    assert env["msgsignature"] == expected_sig
    _, plaintext, receive_id = ref_decrypt(AES_KEY, env["encrypt"])
    assert json.loads(plaintext) == payload and receive_id == ""


def test_open_envelope() -> None:
    crypto = WeComCrypto(TOKEN, AES_KEY)
    inner = json.dumps({"msgid": "m1", "msgtype": "text", "text": {"content": "@bot 123"}})
    encrypted = ref_encrypt(AES_KEY, inner, "")
    sig = signature(TOKEN, "1700000000", "abc", encrypted)
    body = json.dumps({"encrypt": encrypted}).encode()
    assert json.loads(crypto.open_envelope(sig, "1700000000", "abc", body))["msgid"] == "m1"
    with pytest.raises(WeComCryptoError, match="JSON"):
        crypto.open_envelope(sig, "1700000000", "abc", b"<xml/>")
    with pytest.raises(WeComCryptoError, match="encrypt"):
        crypto.open_envelope(sig, "1700000000", "abc", b'{"foo": 1}')


@settings(max_examples=100, deadline=None)
@given(
    # lone surrogates cannot be UTF-8 encoded and never arrive from JSON-decoded WeCom payloads
    text=st.text(st.characters(exclude_categories=["Cs"])),
    receive_id=st.sampled_from(["", "ww0123456789abcdef"]),
    random=st.binary(min_size=16, max_size=16),
)
def test_round_trip_any_unicode(text: str, receive_id: str, random: bytes) -> None:
    crypto = WeComCrypto(TOKEN, AES_KEY, receive_id)
    encrypted = crypto.encrypt(text, random=random)
    assert crypto.decrypt(encrypted) == text
    assert ref_decrypt(AES_KEY, encrypted) == (random, text, receive_id)
