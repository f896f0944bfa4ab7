"""The guards' copy of a conversation, and the extra readings of its text, as a policy asks (pure).

The caller's messages go upstream and into the audit log unchanged; the guards judge a copy
(``judged_copy``) with the same messages at the same indices:

* ``judged_text.system: judge`` (default): a system message the caller wrote is judged as user text
  (role ``user`` in the copy): in a stateless API anyone with a key can write one, and Llama Guard
  would otherwise never see it (its prompt has no system turn) nor Prompt Guard scan it. A message
  named as a retrieved document stays a document for Prompt Guard. ``trusted`` (for keys whose
  system prompts are the operator's own) keeps them as context only.
* ``judged_text.normalize`` (default on): every text part is normalised (``guard.judged.unicode``);
  for Llama Guard, template markers are also neutralised (``guard.judged.markers.defang``). Prompt
  Guard reads the normalised text with its markers: to it they are what an attack looks like. A
  part that normalises to nothing (invisible characters only) is kept as sent.

``readings`` are further texts judged each as a message of its own (no context), beside the
ordinary judgement of the conversation, for the messages a guard judges (``judged_text.readings``):

* ``markers``: each piece of text between template markers (``guard.judged.markers.pieces``);
  Llama Guard only;
* ``base64``, ``hex``, ``url``: everything the message's encoded blobs decode to, normalised
  (``guard.judged.encoded``), as one text;
* ``joins``: where a message follows one of the same role (two user messages in a row) and the
  boundary falls between two letters or digits, the end of the first and the start of the second
  read as one line, without the newline the prompt puts between them: a word split across the two
  messages (``zorb`` / ``lax``) is read whole. Both readings are judged (the joined one as a reading,
  the split one in the conversation), since a boundary between two words may as well be real.

A reading costs one more (short) guard request, and only text that has markers, blobs or split
boundaries has readings, so ordinary traffic pays nothing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from guard.judged.encoded import ENCODINGS, decoded_texts
from guard.judged.markers import defang, pieces
from guard.judged.unicode import normalize
from guard.policy.schema import Policy
from guard.types import Message, Role, TextPart

#: The most characters of each message a join reading takes from either side of the boundary.
JOIN_CHARS = 200


@dataclass(frozen=True)
class JudgedCopy:
    messages: list[Message]  # Llama Guard's copy: roles as judged, text normalised and defanged
    # Each message's text normalised, markers kept: what Prompt Guard scans, where readings start.
    normalized: list[str]


@dataclass(frozen=True)
class Reading:
    message_index: int
    role: Role
    text: str  # normalised, markers kept (``llama_guard_text`` gives what Llama Guard reads)
    why: str  # what this reading is, for the decision's reasons and the audit record
    llama_guard_only: bool = False  # marker pieces: Prompt Guard reads the markers themselves


def judged_copy(policy: Policy, messages: Sequence[Message]) -> JudgedCopy:
    options = policy.judged_text
    copies, normalized = [], []
    for message in messages:
        role: Role = "user" if message.role == "system" and options.system == "judge" else message.role
        parts = message.parts
        if options.normalize:
            plain = [_normalized(part) for part in parts]
            shown = [defang(part) for part in plain]
        else:
            plain = shown = list(parts)
        content: str | list[TextPart] = shown[0] if isinstance(message.content, str) else \
            [TextPart(text=part) for part in shown]
        copies.append(Message(role=role, content=content, name=message.name))
        normalized.append("\n".join(plain))
    return JudgedCopy(messages=copies, normalized=normalized)


def _normalized(part: str) -> str:
    text = normalize(part)
    return text if text.strip() or not part.strip() else part


def llama_guard_text(policy: Policy, text: str) -> str:
    """Normalised text as Llama Guard reads it: template markers neutralised (when normalising)."""
    return defang(text) if policy.judged_text.normalize else text


def readings(policy: Policy, judged: JudgedCopy, indices: Sequence[int]) -> list[Reading]:
    """The readings of the messages at ``indices`` (marker pieces are for Llama Guard only). Never
    blank."""
    options = policy.judged_text
    kinds = set(options.readings)
    encodings = [e for e in ENCODINGS if e in kinds]
    norm = normalize if options.normalize else str
    out: list[Reading] = []
    for index in indices:
        role, text = judged.messages[index].role, judged.normalized[index]
        if "markers" in kinds:
            found = pieces(text)
            out += [Reading(index, role, piece, f"piece {k} of {len(found)} between template markers", True)
                    for k, piece in enumerate(found, 1)]
        decoded = decoded_texts(text, encodings) if encodings else []
        plain = "\n".join(filter(None, (norm(t).strip() for _, t in decoded)))
        if plain:
            names = ", ".join(dict.fromkeys(encoding for encoding, _ in decoded))
            out.append(Reading(index, role, plain, f"decoded {names}"))
        joined = join_reading(judged, index - 1, index) if "joins" in kinds and index > 0 else None
        if joined is not None:
            out.append(Reading(index, role, joined, "joined with the previous message"))
    return out


_EDGE = re.compile(r"\w")


def join_reading(judged: JudgedCopy, before: int, after: int) -> str | None:
    """The end of message ``before`` and the start of message ``after`` as one line, when they are
    of the same role (in the copy: a judged system message is a user message; a trusted one has
    nothing to join) and the boundary falls between two letters or digits; else None."""
    role = judged.messages[before].role
    if role == "system" or role != judged.messages[after].role:
        return None
    head, tail = judged.normalized[before].rstrip(), judged.normalized[after].lstrip()
    if not head or not tail or not (_EDGE.match(head[-1]) and _EDGE.match(tail[0])):
        return None
    head = head.rsplit("\n", 1)[-1][-JOIN_CHARS:]
    tail = tail.split("\n", 1)[0][:JOIN_CHARS]
    return head + tail
