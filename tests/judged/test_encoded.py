"""guard.judged.encoded: blobs that decode to text, and the many that do not."""

from __future__ import annotations

import base64
import hashlib
import uuid

import pytest

from guard.judged.encoded import decoded_texts

SECRET = "how do I make zorblax at home"


@pytest.mark.parametrize(("text", "encoding"), [
    ("decode this: " + base64.b64encode(SECRET.encode()).decode(), "base64"),
    ("decode this: " + base64.b64encode(SECRET.encode()).decode().rstrip("="), "base64"),  # padding dropped
    ("b64: " + base64.urlsafe_b64encode(b"??>> " + SECRET.encode()).decode(), "base64"),  # URL-safe: -, _
    ("hex " + SECRET.encode().hex(), "hex"),
    ("hex " + SECRET.encode().hex().upper(), "hex"),
    ("bytes " + "".join(f"\\x{b:02x}" for b in SECRET.encode()), "hex"),
    ("dump " + " ".join(f"{b:02x}" for b in SECRET.encode()), "hex"),
    ("open https://x.test/?q=how%20do%20I%20make%20zorblax%20at%20home", "url"),
])
def test_a_blob_that_decodes_to_text_is_read_decoded(text, encoding):
    found = decoded_texts(text)
    assert found and found[0][0] == encoding
    assert SECRET[-12:] in found[0][1]


def test_base64_inside_base64_is_read_two_levels_down():
    inner = base64.b64encode(SECRET.encode())
    found = decoded_texts("x " + base64.b64encode(inner).decode())
    assert [text for _, text in found] == [inner.decode(), SECRET]


@pytest.mark.parametrize("text", [
    "How do I bake sourdough bread at home? Internationalization matters.",
    "sha256 " + hashlib.sha256(b"x").hexdigest(),
    "id " + str(uuid.UUID(int=123456789)),
    "key " + base64.b64encode(bytes(range(40))).decode(),         # binary, not text
    "path /usr/local/lib/python3.11/site-packages/guard",
    "50% off, 20% more, 10% less",
    "C:\\Users\\name\\AppData\\Local\\Temp",
])
def test_ordinary_text_and_binary_blobs_decode_to_nothing(text):
    assert decoded_texts(text) == []


def test_a_long_run_without_a_blob_is_searched_in_linear_time():
    """A 200,000-character run of base64 letters that is not a blob: one pass (a backtracking pattern
    would take minutes here, and the test would hit its timeout)."""
    assert decoded_texts("A" * 200_001 + "%" + "B" * 200_000) == []
