"""Tokenizers for the demo models, trained offline with `tokenizers` in milliseconds.

* ``llama3_tokenizer``: Llama 3 layout (the Llama 3 pre-tokenizer split regex + byte-level BPE,
  ``ignore_merges``), with the real Llama 3 special-token strings and Llama 4's header tokens, so
  LG3 and LG4 prompts tokenize; special tokens sit after the ordinary vocabulary, as in Llama 3.
* ``deberta_tokenizer``: Unigram with a metaspace pre-tokenizer (the mDeBERTa layout) and the
  ``[CLS] $A [SEP]`` template.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
BOS = "<|begin_of_text|>"
END_OF_TEXT = "<|end_of_text|>"
EOT = "<|eot_id|>"
PAD = "<|finetune_right_pad_id|>"
LLAMA3_SPECIALS = [BOS, END_OF_TEXT, "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", EOT, PAD]
LLAMA4_SPECIALS = ["<|header_start|>", "<|header_end|>", "<|eot|>"]
# Strings that must each be one token in the Llama Guard demo (what scoring reads).
SINGLE_TOKENS = ["safe", "unsafe", "\n\n"]


def llama3_tokenizer(corpus: Iterable[str], vocab_size: int = 3000) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(corpus, trainer)
    tok.add_special_tokens(LLAMA3_SPECIALS + LLAMA4_SPECIALS)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
            ),
        ]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOT,
        pad_token=PAD,
        model_max_length=131072,
        clean_up_tokenization_spaces=False,
    )
    for text in SINGLE_TOKENS:
        ids = fast.encode(text, add_special_tokens=False)
        assert len(ids) == 1, f"{text!r} must be one token, got {fast.convert_ids_to_tokens(ids)}"
    return fast


DEBERTA_SPECIALS = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]


def deberta_tokenizer(corpus: Iterable[str], vocab_size: int = 2000) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=DEBERTA_SPECIALS, unk_token="[UNK]", show_progress=False
    )
    tok.train_from_iterator(corpus, trainer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        cls_token="[CLS]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        unk_token="[UNK]",
        mask_token="[MASK]",
        model_max_length=512,
    )
