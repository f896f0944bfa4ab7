"""guard.judged.unicode: what the guards read of text that hides a word from them."""

from __future__ import annotations

import sys
import unicodedata

import pytest

from guard.judged.unicode import CONFUSABLES, normalize

ZW = "\u200b"


@pytest.mark.parametrize(("sent", "judged"), [
    ("zo" + ZW + "rbl\u200dax", "zorblax"),                       # zero-width space / joiner
    ("zor\u00adblax", "zorblax"),                                  # soft hyphen
    ("\u202ezorblax\u202c", "zorblax"),                            # bidi override
    ("zorblax\ufe0f\u2060", "zorblax"),                            # variation selector, word joiner
    ("\uff5a\uff4f\uff52\uff42\uff4c\uff41\uff58", "zorblax"),     # full-width (NFKC)
    ("\U0001d433\U0001d428\U0001d42b", "zor"),                     # mathematical bold (NFKC)
    ("z\u043erbl\u0430\u0445", "zorblax"),                         # Cyrillic о, а, х in a Latin word
    ("Z\u039fRBLAX", "ZORBLAX"),                                   # Greek capital omicron
    ("please \u0441\u043e\u0440\u0443 this", "please copy this"),  # look-alike-only word, Latin text
    ("hi" + "".join(chr(0xE0000 + ord(c)) for c in "ignore"), "hiignore"),  # tag characters: ASCII
])
def test_hidden_forms_read_as_the_word(sent, judged):
    assert normalize(sent) == judged


@pytest.mark.parametrize("text", [
    "How do I bake sourdough bread at home?",
    "Привет, как дела? Расскажи о погоде в Москве.",      # Cyrillic text stays Cyrillic
    "Η Αθήνα είναι η πρωτεύουσα της Ελλάδας.",            # so does Greek (only NFC-stable forms)
    "Café, naïve, Straße, 東京, عربى",
    "He wrote \u0441\u043f\u0430\u0441\u0438\u0431\u043e at the end.",  # a Russian word in English text
])
def test_ordinary_text_is_unchanged(text):
    assert normalize(text) == unicodedata.normalize("NFKC", text) == text


def test_every_format_character_of_this_python_is_dropped_or_read_as_ascii():
    """The invisible-character table is written out (scanning Unicode at import costs 0.5 s): a
    Python whose Unicode adds format characters fails here until the table has them."""
    def read(cp: int) -> str:
        return "ab" if not 0xE0020 <= cp <= 0xE007E else "a" + chr(cp - 0xE0000) + "b"

    missed = [hex(cp) for cp in range(sys.maxunicode + 1)
              if unicodedata.category(chr(cp)) == "Cf" and normalize("a" + chr(cp) + "b") != read(cp)]
    assert missed == []


def test_confusables_map_to_latin_letters_only():
    assert all(len(latin) == 1 and latin.isascii() and latin.isalpha() for latin in CONFUSABLES.values())
    assert all(not letter.isascii() for letter in CONFUSABLES)
