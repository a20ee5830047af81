"""The built-in character tokenizer, trained locally with `tokenizers`.

Arithmetic is learned far more easily one digit per token, so the tiny models use a
character-level WordLevel vocabulary: one token per printable ASCII character plus newline and
the special tokens. Training is deterministic; the result ships as `assets/char_tokenizer.json`
and `build_char_tokenizer()` rebuilds the same file from scratch (a test checks it).
"""

from __future__ import annotations

import string
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK]
ASSET = Path(__file__).parent / "assets" / "char_tokenizer.json"


def build_char_tokenizer(corpus: list[str] | None = None) -> Tokenizer:
    """Train a WordLevel tokenizer whose words are single characters.

    The printable ASCII set is always part of the training text, so every vocabulary holds
    the same ids for it regardless of `corpus`; extra characters from `corpus` come after.
    """
    tok = Tokenizer(models.WordLevel(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    trainer = trainers.WordLevelTrainer(special_tokens=SPECIAL_TOKENS, min_frequency=1, show_progress=False)
    # WordLevel orders words by frequency, then lexically: one copy of each character keeps
    # the order purely lexical, hence deterministic.
    alphabet = sorted(set(string.printable) - set("\t\r\x0b\x0c"))
    extra = sorted({c for text in corpus or [] for c in text} - set(alphabet))
    tok.train_from_iterator([ch for ch in alphabet + extra], trainer=trainer)
    return tok


def wrap(tok: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )


def load_tokenizer(path: str | Path | None = None) -> PreTrainedTokenizerBase:
    """The tokenizer at `path` (a `tokenizer.json` file or a HF folder); empty: the built-in one."""
    if path is None:
        return wrap(Tokenizer.from_file(str(ASSET)))
    path = Path(path)
    if path.is_file():
        return wrap(Tokenizer.from_file(str(path)))
    tok = AutoTokenizer.from_pretrained(str(path))
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


if __name__ == "__main__":  # regenerate the shipped asset
    ASSET.parent.mkdir(parents=True, exist_ok=True)
    build_char_tokenizer().save(str(ASSET))
    print(f"wrote {ASSET}")
