"""Hazard taxonomy: the MLCommons codes S1..S14 as Llama Guard 3/4 use them.

``name`` is the short name printed inside the prompt (``S1: Violent Crimes.``); ``long_name`` and
``description`` come from the model cards and are for people (policies, docs, moderation output),
never for the prompt.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from guard.errors import BadInput


@dataclass(frozen=True)
class Hazard:
    code: str
    name: str
    long_name: str
    description: str


HAZARDS: dict[str, Hazard] = {
    h.code: h
    for h in (
        Hazard("S1", "Violent Crimes", "Violent Crimes",
               "Responses that enable, encourage, or endorse the commission of violent crimes, including: "
               "(1) unlawful violence toward people (ex: terrorism, genocide, murder, hate-motivated violent "
               "crimes, child abuse, assault, battery, kidnapping) and (2) unlawful violence toward animals "
               "(ex: animal abuse)"),
        Hazard("S2", "Non-Violent Crimes", "Non-Violent Crimes",
               "Responses that enable, encourage, or endorse the commission of non-violent crimes, including: "
               "(1) personal crimes (ex: labor trafficking, threats, intimidation, hate-motivated non-violent "
               "crimes), (2) financial crimes (ex: fraud, scams, money laundering), (3) property crimes (ex: "
               "theft, arson, vandalism), (4) drug crimes (ex: creating or using regulated substances), (5) "
               "weapons crimes (ex: producing unlicensed firearms), and (6) cyber crimes (ex: hacking)"),
        Hazard("S3", "Sex Crimes", "Sex-Related Crimes",
               "Responses that enable, encourage, or endorse the commission of sex-related crimes, including: "
               "(1) sex trafficking, (2) sexual assault (ex: rape), (3) sexual harassment (physical, verbal, "
               "or visual), and (4) prostitution"),
        Hazard("S4", "Child Exploitation", "Child Sexual Exploitation",
               "Responses that contain, describe, enable, encourage, or endorse the sexual abuse of children"),
        Hazard("S5", "Defamation", "Defamation",
               "Responses that are both verifiably false and likely to injure a living person\u2019s reputation"),
        Hazard("S6", "Specialized Advice", "Specialized Advice",
               "Responses that contain specialized financial, medical, or legal advice, or that indicate "
               "dangerous activities or objects are safe"),
        Hazard("S7", "Privacy", "Privacy",
               "Responses that contain sensitive, nonpublic personal information that could undermine "
               "someone\u2019s physical, digital, or financial security"),
        Hazard("S8", "Intellectual Property", "Intellectual Property",
               "Responses that may violate the intellectual property rights of any third party"),
        Hazard("S9", "Indiscriminate Weapons", "Indiscriminate Weapons",
               "Responses that enable, encourage, or endorse the creation of indiscriminate weapons, including: "
               "(1) chemical weapons (ex: nerve gas), (2) biological weapons (ex: anthrax), (3) radiological "
               "weapons (ex: cobalt bombs), (4) nuclear weapons (ex: fission bombs), and (5) high-yield "
               "explosive weapons (ex: cluster munitions)"),
        Hazard("S10", "Hate", "Hate",
               "Responses that demean or dehumanize people on the basis of their sensitive, personal "
               "characteristics (i.e., race, color, ethnicity, national origin, disability, religious "
               "affiliation, caste, sexual orientation, sex, gender identity, and/or serious disease)"),
        Hazard("S11", "Self-Harm", "Suicide & Self-Harm",
               "Responses that enable, encourage, or endorse acts of intentional self-harm, including: (1) "
               "suicide, (2) self-injury (ex: cutting), and (3) disordered eating"),
        Hazard("S12", "Sexual Content", "Sexual Content", "Responses that contain erotica"),
        Hazard("S13", "Elections", "Elections",
               "Responses that contain factually incorrect information about electoral systems and processes, "
               "including in the time, place, or manner of voting in civic elections"),
        Hazard("S14", "Code Interpreter Abuse", "Code Interpreter Abuse",
               "Responses that seek to abuse code interpreters, including those that enable denial of service "
               "attacks, container escapes or privilege escalation exploits"),
    )
}

HAZARD_CODES: tuple[str, ...] = tuple(HAZARDS)

# Default category set per Llama Guard family (model cards; see docs/models.md).
FAMILY_DEFAULT_CODES: dict[str, tuple[str, ...]] = {
    "llama-guard-3-8b": HAZARD_CODES,
    "llama-guard-3-1b": HAZARD_CODES[:13],
    "llama-guard-4": HAZARD_CODES,
}

_CUSTOM_CODE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,15}$")


def hazard(code: str) -> Hazard:
    try:
        return HAZARDS[code]
    except KeyError:
        raise BadInput(f"unknown hazard category {code!r} (expected one of S1..S14)") from None


def default_categories(family: str) -> dict[str, str]:
    """The family's default prompt categories, code -> the text printed after ``"{code}: "`` in the
    prompt (the short name with its period, as in the HF templates)."""
    try:
        codes = FAMILY_DEFAULT_CODES[family]
    except KeyError:
        raise BadInput(f"no default S-code category set for family {family!r}") from None
    return {code: HAZARDS[code].name + "." for code in codes}


def check_custom_code(code: str) -> str:
    """A custom category code must be a short identifier (it is printed in the prompt and parsed back)."""
    if not _CUSTOM_CODE.match(code):
        raise BadInput(f"invalid category code {code!r}: use a short identifier such as S15 or C1")
    return code


def resolve_categories(
    family: str, categories: dict[str, str] | None = None, excluded: list[str] | tuple[str, ...] = ()
) -> dict[str, str]:
    """Categories as printed in the prompt (code -> text printed verbatim after ``"{code}: "``):
    custom ones replace the default list; excluded codes are
    dropped without renumbering. Unknown excluded codes are an error, not silently ignored."""
    chosen = dict(categories) if categories is not None else default_categories(family)
    for code in chosen:
        check_custom_code(code)
    unknown = [code for code in excluded if code not in chosen]
    if unknown:
        raise BadInput(f"excluded categor{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)} "
                       f"not in the category list ({', '.join(chosen)})")
    resolved = {code: text for code, text in chosen.items() if code not in set(excluded)}
    if not resolved:
        raise BadInput("every category is excluded: nothing left to check")
    return resolved
