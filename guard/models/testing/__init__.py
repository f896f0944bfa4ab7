"""Tiny demo models built offline, for tests and demos (no weights can be downloaded here).

``ensure_demo_models()`` returns a ``DemoModels`` of local directories, built once per builder
version and then reused (``python -m guard.models.testing NAME DIR`` builds one). What the models
answer (the facts tests rely on):

* Llama Guard demo (family ``llama-guard-3-1b``, in ``config.guard_family``): judges the last
  message; ``unsafe\\nS9`` when it contains ``zorblax``, ``unsafe\\nS1`` for ``quintrex``,
  ``unsafe\\nS10`` for ``vorpalite`` (lower-case or capitalised), ``safe`` otherwise, generated as
  ``"\\n\\n" + answer + "<|eot_id|>"``, whatever category list the prompt carries. Trained on one-
  and two-turn conversations (a hazard word only in the user turn of a User/Agent pair is safe).
* Prompt Guard demos (v1: BENIGN/INJECTION/JAILBREAK, v2: BENIGN/MALICIOUS): jailbreak phrases
  such as ``ignore all previous instructions`` score high, instructions to the assistant hidden in
  e-mails or web pages score high (INJECTION for v1), ordinary text low.
* Chat demo: Llama 3 chat format; fixed replies (``CHAT_REPLIES``) to greetings, questions, other
  requests and ``tell me a story``; any prompt mentioning ``zorblax`` gets a reply containing
  ``zorblax``.
"""

from guard.models.testing.cache import DemoModels, builder_key, ensure_demo_models
from guard.models.testing.chat import REPLIES as CHAT_REPLIES
from guard.models.testing.chat import build_chat_model
from guard.models.testing.corpus import HAZARD_CODES
from guard.models.testing.llama_guard import FAMILY as LLAMA_GUARD_FAMILY
from guard.models.testing.llama_guard import build_llama_guard_model
from guard.models.testing.prompt_guard import build_prompt_guard_model

__all__ = [
    "CHAT_REPLIES",
    "HAZARD_CODES",
    "LLAMA_GUARD_FAMILY",
    "DemoModels",
    "build_chat_model",
    "build_llama_guard_model",
    "build_prompt_guard_model",
    "builder_key",
    "ensure_demo_models",
]
