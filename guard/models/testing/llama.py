"""The tiny Llama shape shared by the demo causal LMs (Llama 3 layout: GQA, RoPE theta 500000,
tied embeddings as in Llama 3.2 1B), and its generation settings (greedy, stop at end of turn)."""

from __future__ import annotations

from transformers import GenerationConfig, LlamaConfig, PreTrainedTokenizerFast

from guard.models.testing import vocab


def tiny_llama_config(tokenizer: PreTrainedTokenizerFast, **overrides: object) -> LlamaConfig:
    # A wide initialisation makes attention peaked from the start; with the default 0.02 the
    # model needs many more steps to find the one word that decides the answer.
    settings = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=192,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=8192,
        rope_theta=500000.0,
        tie_word_embeddings=True,
        initializer_range=0.1,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=[tokenizer.convert_tokens_to_ids(vocab.END_OF_TEXT), tokenizer.eos_token_id],
        pad_token_id=tokenizer.pad_token_id,
    )
    settings.update(overrides)
    return LlamaConfig(**settings)


def greedy_generation_config(config: LlamaConfig, **overrides: object) -> GenerationConfig:
    return GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        do_sample=False,
        **overrides,
    )
