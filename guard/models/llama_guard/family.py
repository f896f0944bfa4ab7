"""Llama Guard model families: special tokens, verdict tokens, default categories, template pieces.

The template pieces are constants transcribed from each model's own Hugging Face chat template
(see ``docs/models.md`` and ``shared/reference/guard-models.md`` §1-§2); ``prompt.render_prompt``
assembles them, never with string formatting on caller text. A ``Special`` piece is a token the
template writes itself (inserted by id at tokenization); every ``str`` piece is plain text.

Families:

* ``llama-guard-3-8b``: S1..S14, leading space before ``<|begin_of_text|>``, no space before
  ``<|eot_id|>``.
* ``llama-guard-3-1b``: S1..S13, a space before ``<|eot_id|>``.
* ``llama-guard-4``: text only, S1..S14. **Unverified**: rebuilt from one observed render of the HF
  template (``according to our``, one newline after ``<BEGIN CONVERSATION>``, the literal
  backslash-n pair after each message); nobody here has read its ``chat_template.json``.
* ``llama-guard-2`` (legacy): ``[INST]`` format on Llama 3 weights, its own 11-code list.
* ``llama-guard-1`` (legacy): ``[INST]`` format, O1..O6 with the full policy text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

from guard.errors import BadInput
from guard.taxonomy import default_categories as taxonomy_defaults


@dataclass(frozen=True)
class Special:
    """A special token the template writes itself (e.g. ``<|eot_id|>``): inserted as its id."""

    token: str


Piece = str | Special


def piece_text(piece: Piece) -> str:
    return piece.token if isinstance(piece, Special) else piece


@dataclass(frozen=True)
class PromptTemplate:
    """The constant text of one family's prompt, in order. ``{role}`` is the only placeholder and
    is filled only in ``task`` and ``instruction`` (constants), with ``User`` or ``Agent``."""

    opening: tuple[Piece, ...]  # before "Task: ..."
    task: str  # "Task: ... '{role}' messages ...\n\n<BEGIN UNSAFE CONTENT CATEGORIES>\n"
    conversation_open: str  # "<END UNSAFE CONTENT CATEGORIES>\n\n<BEGIN CONVERSATION>\n\n"
    turn_end: str  # after each message text
    instruction: str  # "<END CONVERSATION>\n\nProvide your safety assessment ..."
    closing: tuple[Piece, ...]  # after the instruction (end of turn + assistant header)
    label_separator: str = ": "  # between "User"/"Agent" and the message text
    category_separator: str = ": "  # between a code and its text; each category line ends "\n"


@dataclass(frozen=True)
class FamilySpec:
    name: str
    template: PromptTemplate
    default_categories: Mapping[str, str]  # code -> text printed after "{code}: "
    bos: str  # beginning-of-sequence token string
    eos: str  # end-of-text token string
    eot: str | None  # end-of-turn token the model emits after its verdict (None: only eos)
    header_start: str | None
    header_end: str | None
    # Whether the template text itself starts with the BOS token. When False (the [INST]
    # families), ``encode_prompt`` prepends it so that every prompt carries exactly one BOS.
    bos_in_template: bool
    # Text the model writes before its verdict word: "\n\n" for prompts that end at the assistant
    # header, so the verdict is read at the position after this lead-in.
    verdict_lead_in: str
    code_prefix: str  # "S" or "O": the letter of the default codes
    max_code_number: int
    verified: bool  # False when the template text was not seen (LG4)
    hub_ids: tuple[str, ...] = ()
    safe_token: str = "safe"
    unsafe_token: str = "unsafe"

    @property
    def ends_at_assistant_header(self) -> bool:
        return self.verdict_lead_in == "\n\n"

    @property
    def special_tokens(self) -> tuple[str, ...]:
        """Every special-token string this family's template or output uses."""
        tokens = (self.bos, self.eos, self.eot, self.header_start, self.header_end)
        return tuple(dict.fromkeys(t for t in tokens if t))

    @property
    def stop_tokens(self) -> tuple[str, ...]:
        """Tokens that end the model's answer (greedy decode stops at the first)."""
        return tuple(dict.fromkeys(t for t in (self.eot, self.eos) if t))


# ----------------------------------------------------------------------------- shared text

_TASK = ("Task: Check if there is unsafe content in '{role}' messages in conversations according our "
         "safety policy with the below categories.\n\n<BEGIN UNSAFE CONTENT CATEGORIES>\n")
_TASK_LG4 = _TASK.replace("according our", "according to our")
_CONVERSATION_OPEN = "<END UNSAFE CONTENT CATEGORIES>\n\n<BEGIN CONVERSATION>\n\n"
_INSTRUCTION = ("<END CONVERSATION>\n\nProvide your safety assessment for ONLY THE LAST {role} message in "
                "the above conversation:\n - First line must read 'safe' or 'unsafe'.\n - If unsafe, a "
                "second line must include a comma-separated list of violated categories.")
_INSTRUCTION_LG1 = ("<END CONVERSATION>\n\nProvide your safety assessment for {role} in the above "
                    "conversation:\n- First line must read 'safe' or 'unsafe'.\n- If unsafe, a second line "
                    "must include a comma-separated list of violated categories.")

_L3_BOS, _L3_EOS, _L3_EOT = "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"
_L3_HS, _L3_HE = "<|start_header_id|>", "<|end_header_id|>"
_L4_EOT, _L4_HS, _L4_HE = "<|eot|>", "<|header_start|>", "<|header_end|>"


def _llama3_opening(lead: str = "") -> tuple[Piece, ...]:
    pieces: tuple[Piece, ...] = (Special(_L3_BOS), Special(_L3_HS), "user", Special(_L3_HE), "\n\n")
    return ((lead,) if lead else ()) + pieces


_LG3_8B = PromptTemplate(
    opening=_llama3_opening(lead=" "),  # the 8B template's leading space, kept
    task=_TASK,
    conversation_open=_CONVERSATION_OPEN,
    turn_end="\n\n",
    instruction=_INSTRUCTION,  # no space before <|eot_id|>
    closing=(Special(_L3_EOT), Special(_L3_HS), "assistant", Special(_L3_HE)),
)

_LG3_1B = PromptTemplate(
    opening=_llama3_opening(),
    task=_TASK,
    conversation_open=_CONVERSATION_OPEN,
    turn_end="\n\n",
    instruction=_INSTRUCTION + " ",  # the 1B template has a space before <|eot_id|>
    closing=(Special(_L3_EOT), Special(_L3_HS), "assistant", Special(_L3_HE)),
)

_LG4 = PromptTemplate(
    opening=(Special(_L3_BOS), Special(_L4_HS), "user", Special(_L4_HE), "\n\n"),
    task=_TASK_LG4,
    conversation_open="<END UNSAFE CONTENT CATEGORIES>\n\n<BEGIN CONVERSATION>\n",
    turn_end="\\n\\n\n\n",  # literal backslash-n twice (the template's escaping bug), then two newlines
    instruction=_INSTRUCTION + " ",
    closing=(Special(_L4_EOT), Special(_L4_HS), "assistant", Special(_L4_HE)),
)

_LG2 = PromptTemplate(
    opening=("[INST] ",),
    task=_TASK,
    conversation_open=_CONVERSATION_OPEN,
    turn_end="\n\n",
    instruction=_INSTRUCTION + " [/INST]",
    closing=(),
)

_LG1 = PromptTemplate(
    opening=("[INST] ",),
    task=_TASK,
    conversation_open=_CONVERSATION_OPEN,
    turn_end="\n\n",
    instruction=_INSTRUCTION_LG1 + " [/INST]",
    closing=(),
)

# ----------------------------------------------------------------------------- legacy categories

# Llama Guard 2: its own 11 codes (no Defamation, no Elections: S5 is Specialized Advice here), each
# printed with a trailing space as in its HF template.
LG2_CATEGORIES: Mapping[str, str] = MappingProxyType({
    f"S{i}": f"{name}. " for i, name in enumerate((
        "Violent Crimes", "Non-Violent Crimes", "Sex Crimes", "Child Exploitation", "Specialized Advice",
        "Privacy", "Intellectual Property", "Indiscriminate Weapons", "Hate", "Self-Harm", "Sexual Content",
    ), start=1)
})

# Llama Guard 1: O1..O6 with the policy text its HF template prints (O1 alone has a trailing space).
LG1_CATEGORIES: Mapping[str, str] = MappingProxyType({
    "O1": "Violence and Hate. \n"
          "Should not\n"
          "- Help people plan or engage in violence.\n"
          "- Encourage people to engage in violence.\n"
          "- Express hateful, derogatory, or demeaning sentiments against people based on sensitive personal "
          "characteristics like their race, color, religion, national origin, sexual orientation, gender, "
          "gender identity, or disability.\n"
          "- Encourage discrimination against people based on those characteristics and should not use slurs "
          "or create insults based on those characteristics.\n"
          "Can\n"
          "- Provide information on violence and discrimination.\n"
          "- Discuss the topics of hate and violence, and can discuss historical events involving violence.",
    "O2": "Sexual Content.\n"
          "Should not\n"
          "- Engage in sexually explicit (i.e., erotic) conversations and should not encourage people to "
          "engage in sexual activities.\n"
          "Can\n"
          "- Discuss topics related to sexuality and sexual education.\n"
          "- Provide general information regarding sexual activities.\n"
          "- Provide guidance on topics related to sexual health.",
    "O3": "Criminal Planning.\n"
          "Should not\n"
          "- Help people plan or engage in criminal activities like theft, kidnapping, or financial crimes, "
          "especially when the person indicates that they may act on the information provided to them.\n"
          "- Encourage people to engage in criminal activities or condone criminal behavior.\n"
          "Can\n"
          "- Help people understand how crimes are committed, provided that the response is not so detailed "
          "that it could be used to provide a roadmap for future crimes.\n"
          "- Help people understand how systems work that are used to prevent crimes, provided those "
          "descriptions do not provide detailed information on how to defeat those systems.",
    "O4": "Guns and Illegal Weapons.\n"
          "Should not\n"
          "- Assist in the planning or execution of firearm or illegal weapons crimes, especially when the "
          "person indicates that they may act on the information provided to them.\n"
          "- Encourage people to engage in firearm or illegal weapons crimes or condone such behavior.\n"
          "Can\n"
          "- Discuss firearms and the arguments for and against firearm ownership.",
    "O5": "Regulated or Controlled Substances.\n"
          "Should not\n"
          "- Encourage or assist people in the trafficking, consumption, or use of regulated or controlled "
          "substances, including but not limited to illegal drugs, tobacco, alcohol, and cannabis.\n"
          "- Assist or encourage people to create such substances when it is illegal to do so.\n"
          "Can\n"
          "- Discuss the use of regulated or controlled substances, and can provide general information on "
          "those substances (ex: what their chemical composition is and what their effects are).\n"
          "- Provide information on how those substances are manufactured, provided that the information is "
          "not so detailed as to provide step-by-step instructions for their creation.",
    "O6": "Self-Harm.\n"
          "Should not\n"
          "- Encourage people to harm themselves.\n"
          "- Romanticize or condone self-harm or suicide.\n"
          "- Provide information regarding the methods of suicide or self-harm.\n"
          "- Provide any information or advice, other than information regarding appropriate health "
          "resources, to people who express or imply that they wish to harm themselves.\n"
          "Can\n"
          "- Provide general information regarding self-harm and suicide (ex: statistics, the mental health "
          "challenges faced by those who take these actions).\n"
          "Should\n"
          "- Provide information regarding appropriate health resources to people who imply or express the "
          "desire to harm themselves.",
})

# ----------------------------------------------------------------------------- the families

_LLAMA3_TOKENS = dict(bos=_L3_BOS, eos=_L3_EOS, eot=_L3_EOT, header_start=_L3_HS, header_end=_L3_HE)

FAMILIES: Mapping[str, FamilySpec] = MappingProxyType({
    spec.name: spec
    for spec in (
        FamilySpec(
            name="llama-guard-3-8b", template=_LG3_8B,
            default_categories=MappingProxyType(taxonomy_defaults("llama-guard-3-8b")),
            **_LLAMA3_TOKENS, bos_in_template=True, verdict_lead_in="\n\n",
            code_prefix="S", max_code_number=14, verified=True,
            hub_ids=("meta-llama/Llama-Guard-3-8B", "meta-llama/Llama-Guard-3-8B-INT8"),
        ),
        FamilySpec(
            name="llama-guard-3-1b", template=_LG3_1B,
            default_categories=MappingProxyType(taxonomy_defaults("llama-guard-3-1b")),
            **_LLAMA3_TOKENS, bos_in_template=True, verdict_lead_in="\n\n",
            code_prefix="S", max_code_number=13, verified=True,
            hub_ids=("meta-llama/Llama-Guard-3-1B", "meta-llama/Llama-Guard-3-1B-INT4"),
        ),
        FamilySpec(
            name="llama-guard-4", template=_LG4,
            default_categories=MappingProxyType(taxonomy_defaults("llama-guard-4")),
            bos=_L3_BOS, eos=_L3_EOS, eot=_L4_EOT, header_start=_L4_HS, header_end=_L4_HE,
            bos_in_template=True, verdict_lead_in="\n\n",
            code_prefix="S", max_code_number=14, verified=False,
            hub_ids=("meta-llama/Llama-Guard-4-12B",),
        ),
        FamilySpec(
            name="llama-guard-2", template=_LG2, default_categories=LG2_CATEGORIES,
            bos=_L3_BOS, eos=_L3_EOS, eot=_L3_EOT, header_start=None, header_end=None,
            bos_in_template=False, verdict_lead_in="",
            code_prefix="S", max_code_number=11, verified=True,
            hub_ids=("meta-llama/Meta-Llama-Guard-2-8B",),
        ),
        FamilySpec(
            name="llama-guard-1", template=_LG1, default_categories=LG1_CATEGORIES,
            bos="<s>", eos="</s>", eot=None, header_start=None, header_end=None,
            bos_in_template=False, verdict_lead_in="",
            code_prefix="O", max_code_number=6, verified=True,
            hub_ids=("meta-llama/LlamaGuard-7b",),
        ),
    )
})

FAMILY_NAMES: tuple[str, ...] = tuple(FAMILIES)


def get_family(name: str) -> FamilySpec:
    try:
        return FAMILIES[name]
    except KeyError:
        raise BadInput(f"unknown Llama Guard family {name!r} (expected one of {', '.join(FAMILIES)})",
                       param="family") from None


# Ordered: the first pattern that matches a model id or directory name wins.
_GUESSES = (
    (re.compile(r"guard[-_ ]?4", re.I), "llama-guard-4"),
    (re.compile(r"guard[-_ ]?3.*\b(1b|11b)", re.I), "llama-guard-3-1b"),  # 11B-Vision: same text template
    (re.compile(r"guard[-_ ]?3", re.I), "llama-guard-3-8b"),
    (re.compile(r"guard[-_ ]?2", re.I), "llama-guard-2"),
    (re.compile(r"llama-?guard-7b", re.I), "llama-guard-1"),
)


def guess_family(model_id: str) -> str | None:
    """The family a hub id or directory name most likely belongs to (None when it says nothing).
    ``Llama-Guard-3-11B-Vision`` maps to ``llama-guard-3-1b`` (same text template, S1..S13)."""
    for pattern, name in _GUESSES:
        if pattern.search(model_id):
            return name
    return None
