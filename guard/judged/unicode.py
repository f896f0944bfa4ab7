"""Unicode normalisation of judged text: what a reader sees, in the letters a guard model knows.

Three tricks make text a guard model misreads while the chat model (or a person) reads it as
intended, and each is undone here:

* **Invisible characters** inside a word (``zo\\u200brblax``): every format character (Unicode
  category Cf: zero-width space and joiners, soft hyphen, bidi controls, word joiner, BOM, ...),
  variation selectors, the combining grapheme joiner and the Hangul fillers are dropped. Tag
  characters (U+E0020..U+E007E) are the exception: chat models read them as the ASCII character
  they shadow ("ASCII smuggling"), so they become that character.
* **Compatibility forms** (full-width ``ｚｏｒｂｌａｘ``, mathematical ``𝐳𝐨𝐫𝐛``, ligatures, circled
  letters, odd spaces): NFKC.
* **Look-alike letters** from other scripts (``zоrblах`` with Cyrillic ``о``, ``а``, ``х``): the
  letters of ``CONFUSABLES`` (a small table of Cyrillic and Greek letters drawn like a Latin one,
  after Unicode's confusables list) become the Latin letter, in a word that also holds Latin
  letters (a mixed-script word, which ordinary text never has), or in a word made only of such
  letters in text that is mostly Latin (``сорy`` for ``copy``). A Russian or Greek word in Russian
  or Greek text is left alone: folding it would garble it for the guard, not clarify it.

The result may differ from the caller's text in length and in meaning-free ways only; text that
has none of these characters comes back unchanged (the fast path for ASCII).
"""

from __future__ import annotations

import re
import unicodedata

# Format characters (category Cf, Unicode 14, Python 3.11's unicodedata; ``test_unicode`` checks the
# table against the running Python's) except the tag characters, plus the invisible characters of
# other categories: combining grapheme joiner (Mn), variation selectors (Mn), Hangul fillers (Lo).
_INVISIBLE_RANGES = (
    (0x00AD, 0x00AD), (0x034F, 0x034F), (0x0600, 0x0605), (0x061C, 0x061C), (0x06DD, 0x06DD),
    (0x070F, 0x070F), (0x0890, 0x0891), (0x08E2, 0x08E2), (0x115F, 0x1160), (0x180E, 0x180E),
    (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x2064), (0x2066, 0x206F), (0x3164, 0x3164),
    (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF9, 0xFFFB), (0x110BD, 0x110BD),
    (0x110CD, 0x110CD), (0x13430, 0x13438), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001), (0xE007F, 0xE007F), (0xE0100, 0xE01EF),
)
_TAGS = (0xE0020, 0xE007E)  # tag characters: shadows of ASCII 0x20..0x7E


def _class(ranges: tuple[tuple[int, int], ...]) -> str:
    return "".join(re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges)


_INVISIBLE = re.compile(f"[{_class(_INVISIBLE_RANGES)}]+")
_TAG = re.compile(f"[{_class((_TAGS,))}]")

#: Cyrillic and Greek letters drawn like a Latin letter in common fonts -> that letter. Deliberately
#: small: only near-identical shapes, so that folding never invents a word.
CONFUSABLES: dict[str, str] = {
    # Cyrillic capitals and small letters
    "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P", "С": "C", "Т": "T",
    "Х": "X", "У": "Y", "Ѕ": "S", "І": "I", "Ј": "J", "Ԛ": "Q", "Ԝ": "W", "Ү": "Y",
    "а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "у": "y", "х": "x", "ѕ": "s", "і": "i", "ј": "j",
    "ԁ": "d", "һ": "h", "ӏ": "l", "ԛ": "q", "ԝ": "w", "ү": "y",
    # Greek capitals and small letters
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N", "Ο": "O",
    "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
    "ο": "o", "α": "a", "ι": "i", "ν": "v", "ρ": "p", "υ": "u", "ϲ": "c", "ϳ": "j",
}
_FOLD = str.maketrans(CONFUSABLES)
_CONFUSABLE = f"[{''.join(CONFUSABLES)}]"
_LATIN_LETTERS = r"A-Za-z\u00C0-\u024F\u1E00-\u1EFF"
_HAS_CONFUSABLE = re.compile(_CONFUSABLE)
_LATIN = re.compile(f"[{_LATIN_LETTERS}]")
_CYRILLIC_GREEK = re.compile(r"[\u0370-\u03FF\u0400-\u052F\u1F00-\u1FFF]")
_LETTERS = r"[^\W\d_]*"  # a run of letters
# A word holding a look-alike; one holding a look-alike and a Latin letter (mixed-script).
_WORD_WITH_CONFUSABLE = re.compile(f"{_LETTERS}{_CONFUSABLE}{_LETTERS}")
_MIXED_WORD = re.compile(f"{_LETTERS}(?:[{_LATIN_LETTERS}]{_LETTERS}{_CONFUSABLE}|{_CONFUSABLE}{_LETTERS}"
                         f"[{_LATIN_LETTERS}]){_LETTERS}")


def normalize(text: str) -> str:
    """``text`` as the guards should read it (see the module docstring)."""
    if text.isascii():
        return text
    text = _TAG.sub(lambda m: chr(ord(m.group()) - 0xE0000), text)
    text = _INVISIBLE.sub("", text)
    text = unicodedata.normalize("NFKC", text)
    return fold_confusables(text)


def fold_confusables(text: str) -> str:
    """Fold look-alike letters in mixed-script words, and in look-alike-only words of mostly Latin
    text."""
    if not _HAS_CONFUSABLE.search(text):
        return text
    latin = len(_LATIN.findall(text))
    if not latin:  # no Latin letter: nothing to read as Latin
        return text
    if latin <= len(_CYRILLIC_GREEK.findall(text)):
        return _MIXED_WORD.sub(lambda m: m.group().translate(_FOLD), text)

    def word(match: re.Match[str]) -> str:
        w = match.group()
        return w.translate(_FOLD) if _LATIN.search(w) or all(ch in CONFUSABLES for ch in w) else w

    return _WORD_WITH_CONFUSABLE.sub(word, text)
