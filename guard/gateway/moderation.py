"""OpenAI moderation results from guard results, through the versioned mapping file.

An input the guard could not judge (model failure, off-format answer, timeout) still gets a result:
``flagged`` follows the caller's policy's Llama Guard ``on_error`` for input (fail closed by
default), with no category set and ``guard.status``/``guard.error`` saying what happened.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from guard.errors import ConfigError, GuardError, GuardTimeout
from guard.gateway.protocol import ModerationResult
from guard.taxonomy import HAZARD_CODES
from guard.types import Action, LlamaGuardResult, PromptGuardResult

DEFAULT_MAP = Path(__file__).with_name("moderation_map.yaml")

OPENAI_CATEGORIES: tuple[str, ...] = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)
# Which input types each key applies to (OpenAI's table); the gateway reads text only.
_APPLIED = {key: ["text"] for key in OPENAI_CATEGORIES}


class ModerationMap(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str
    categories: dict[str, list[str]]

    @field_validator("categories")
    @classmethod
    def _all_keys_known_codes(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        missing = set(OPENAI_CATEGORIES) - set(value)
        extra = set(value) - set(OPENAI_CATEGORIES)
        if missing or extra:
            raise ValueError(
                f"needs exactly OpenAI's 13 keys (missing {sorted(missing)}, unknown {sorted(extra)})"
            )
        bad = {c for codes in value.values() for c in codes} - set(HAZARD_CODES)
        if bad:
            raise ValueError(f"unknown hazard codes {sorted(bad)}")
        return value


@lru_cache(maxsize=8)
def load_moderation_map(path: Path = DEFAULT_MAP) -> ModerationMap:
    try:
        return ModerationMap.model_validate(yaml.safe_load(Path(path).read_text(encoding="utf-8")))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read moderation map {path}: {exc}") from None
    except ValidationError as exc:
        raise ConfigError(f"moderation map {path}: {exc.errors()[0]['msg']}") from None


def moderation_result(
    mapping: ModerationMap, llama_guard: LlamaGuardResult, prompt_guard: PromptGuardResult | None
) -> ModerationResult:
    """One OpenAI result: keys set from the verdict's codes, scores from the per-code scores."""
    codes = set(llama_guard.categories)
    scores = llama_guard.category_scores
    categories = {key: bool(codes.intersection(mapped)) for key, mapped in mapping.categories.items()}
    category_scores = {
        key: max((scores.get(c, 0.0) for c in mapped), default=0.0)
        for key, mapped in mapping.categories.items()
    }
    return ModerationResult(
        flagged=bool(codes),
        categories=categories,
        category_scores=category_scores,
        category_applied_input_types=dict(_APPLIED),
        guard=_extras(mapping, llama_guard, prompt_guard),
    )


def failed_result(mapping: ModerationMap, error: GuardError, on_error: Action) -> ModerationResult:
    """The result of an input Llama Guard failed on: flagged unless the policy fails open. Only the
    error's kind is shown (its message may name hosts or paths; the gateway log has it)."""
    return ModerationResult(
        flagged=on_error is not Action.ALLOW,
        categories={key: False for key in mapping.categories},
        category_scores={key: 0.0 for key in mapping.categories},
        category_applied_input_types=dict(_APPLIED),
        guard={
            "mapping_version": mapping.version,
            "status": "timeout" if isinstance(error, GuardTimeout) else "guard_error",
            "error": error.kind,
            "on_error": on_error.value,
        },
    )


def _extras(mapping: ModerationMap, lg: LlamaGuardResult, pg: PromptGuardResult | None) -> dict[str, object]:
    extras: dict[str, object] = {
        "mapping_version": mapping.version,
        "status": "ok",
        "categories": list(lg.categories),
        "category_scores": dict(lg.category_scores),
        "unsafe_score": lg.unsafe_score,
        "llama_guard_model": lg.model.model,
    }
    if pg is not None:
        extras["prompt_guard"] = {
            "jailbreak_score": pg.jailbreak_score,
            "injection_score": pg.injection_score,
            "model": pg.model.model,
        }
    return extras
