"""A tiny Qwen2-shaped Hugging Face checkpoint folder, built locally: the "real path" test bed.

The built-in policies use a character tokenizer and an in-memory model; a real run loads a HF
folder (`policy.path`) with a byte-level BPE, ChatML special tokens and a chat template. This
module makes such a folder from scratch, in seconds and with no download, so everything that
depends on the real layout (`from_pretrained`, `apply_chat_template`, EOS = `<|im_end|>`, left
padding, a pad token distinct from EOS, safetensors weights) can be exercised end to end.

The tokenizer copies Qwen2's choices: NFC, Qwen2's split regex (digits one per token, so
arithmetic stays learnable), byte-level BPE, `<|endoftext|>` as pad and document end,
`<|im_start|>` / `<|im_end|>` for chat turns, no BOS. Training is deterministic for a given
corpus.

    python -m policies.tiny_checkpoint OUT_DIR --corpus FILE.parquet|FILE.jsonl [--text-keys question,answer] [--vocab-size 512]
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = [ENDOFTEXT, IM_START, IM_END]
CHAT_ROLES = ("system", "user", "assistant")
# Qwen2's pre-tokenizer split: contractions, words, single digits, punctuation runs, whitespace.
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# ChatML as Qwen2 writes it, minus the default system prompt and the tool-calling branches.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def _training_text(corpus: Iterable[str], roles: Sequence[str]) -> Iterator[str]:
    """`corpus`, each text followed by the chat role names: the template's words become frequent
    enough to be merged whatever the corpus is about."""
    for text in corpus:
        yield text
        if roles:
            yield "\n".join(roles)


def train_bpe_tokenizer(
    corpus: Iterable[str], vocab_size: int = 512, chat_roles: Sequence[str] = CHAT_ROLES
) -> PreTrainedTokenizerFast:
    """A byte-level BPE of at most `vocab_size` ids (3 special + 256 bytes + merges) trained on
    `corpus`, with ChatML special tokens and chat template. Deterministic for a given corpus.

    `vocab_size` is a cap: a small corpus runs out of pairs to merge before reaching it.
    """
    if vocab_size < len(SPECIAL_TOKENS) + 256:
        raise ValueError(f"vocab_size {vocab_size} is below the {len(SPECIAL_TOKENS) + 256} special and byte tokens")
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_training_text(corpus, chat_roles), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        bos_token=None,
        extra_special_tokens=[IM_START],
        padding_side="left",
        clean_up_tokenization_spaces=False,
        chat_template=CHAT_TEMPLATE,
    )


def build_tiny_qwen2(
    tokenizer: PreTrainedTokenizerBase,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 2,
    num_kv_heads: int = 1,
    head_dim: int = 32,
    intermediate_size: int = 128,
    max_position_embeddings: int = 512,
    seed: int = 0,
) -> Qwen2ForCausalLM:
    """A randomly initialised fp32 Qwen2 causal LM sized for `tokenizer` (deterministic per seed)."""
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        head_dim=head_dim,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype="float32",
        attn_implementation="sdpa",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config).float()
    model.generation_config.bos_token_id = None
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval()


def write_tiny_checkpoint(
    out_dir: str | Path, corpus: Iterable[str], vocab_size: int = 512, seed: int = 0, **model_kwargs
) -> Path:
    """Train the tokenizer on `corpus`, build the model and save both (safetensors) in `out_dir`."""
    out = Path(out_dir)
    tokenizer = train_bpe_tokenizer(corpus, vocab_size)
    model = build_tiny_qwen2(tokenizer, seed=seed, **model_kwargs)
    tokenizer.model_max_length = model.config.max_position_embeddings
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out)
    model.save_pretrained(out)
    return out


def read_texts(path: str | Path, text_keys: Sequence[str] = ("question", "answer")) -> list[str]:
    """The non-empty values of the `text_keys` columns of a `.parquet` or `.jsonl` file, row by row."""
    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
    elif path.suffix == ".jsonl":
        import pyarrow.json as pj

        table = pj.read_json(path)
    else:
        raise ValueError(f"unknown corpus suffix {path.suffix!r} (use .parquet or .jsonl)")
    missing = [k for k in text_keys if k not in table.column_names]
    if missing:
        raise KeyError(f"{path} has no column {missing} (columns: {table.column_names})")
    columns = [table.column(k).to_pylist() for k in text_keys]
    return [str(value) for row in zip(*columns) for value in row if value not in (None, "")]


# the model's size, as `build_tiny_qwen2` defaults it
SIZE_FLAGS = {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "num_kv_heads": 1, "intermediate_size": 128, "max_position_embeddings": 512}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("out_dir")
    parser.add_argument("--corpus", required=True, help="a .parquet or .jsonl dataset file")
    parser.add_argument("--text-keys", default="question,answer", help="comma-separated text columns")
    parser.add_argument("--vocab-size", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    for name, default in SIZE_FLAGS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=default, help=f"model {name} (default {default})")
    args = parser.parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    texts = read_texts(args.corpus, [k.strip() for k in args.text_keys.split(",") if k.strip()])
    out = write_tiny_checkpoint(args.out_dir, texts, args.vocab_size, args.seed, **{k: getattr(args, k) for k in SIZE_FLAGS})
    print(f"wrote {out} (trained on {len(texts)} texts)")


if __name__ == "__main__":
    main()
