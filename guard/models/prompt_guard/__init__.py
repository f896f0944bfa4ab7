"""Prompt Guard 1 and 2 (jailbreak / prompt-injection classifiers), scored as Meta's reference
helpers score them. See ``runner`` for the scoring and ``chunking`` for how long text is split."""

from guard.models.prompt_guard.family import PromptGuardFamily, family_from_labels
from guard.models.prompt_guard.load import load_prompt_guard
from guard.models.prompt_guard.runner import PromptGuardRunner

__all__ = ["PromptGuardFamily", "PromptGuardRunner", "family_from_labels", "load_prompt_guard"]
