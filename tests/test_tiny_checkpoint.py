"""The locally built tiny Qwen2 checkpoint: BPE tokenizer, chat template, model, HF round trips."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from envs.dataset import word_problems as wp
from policies import tiny_checkpoint as tc

CHAT = [{"role": "user", "content": "hi"}]
TEXTS = [
    "Mia has 7 + 5 = 12 apples.\n#### 12",
    "How many marbles does Noah have now?",
    "Der Bär isst 3 Äpfel. 日本語 ünïcödé  two  spaces\ttab\n\nnewlines",
    "<|im_start|>user\nWhat is 12345 * 6?<|im_end|>\n<|im_start|>assistant\n",
]


def bpe(tokenizer) -> tuple[dict, list]:
    """The trained part of a tokenizer: its vocabulary and merges."""
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    return model["vocab"], model["merges"]


@pytest.fixture(scope="module")
def rows():
    return wp.generate(500, seed=0)


@pytest.fixture(scope="module")
def corpus(rows):
    return [r[k] for r in rows for k in ("question", "answer")]


@pytest.fixture(scope="module")
def tokenizer(corpus):
    return tc.train_bpe_tokenizer(corpus)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, corpus):
    return tc.write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt", corpus)


def test_training_is_deterministic(corpus, tokenizer):
    assert bpe(tc.train_bpe_tokenizer(corpus)) == bpe(tokenizer)
    assert bpe(tc.train_bpe_tokenizer(corpus[:200])) != bpe(tokenizer)


def test_vocab_is_byte_level_bpe_with_merges(tokenizer):
    assert 3 + 256 < len(tokenizer) <= 512
    assert tokenizer.tokenize(" apples") == ["Ġapples"]
    assert tokenizer.tokenize("Mia has") == ["Mia", "Ġhas"]
    assert len(tokenizer.tokenize("Mia has 7 apples.")) <= 6
    # unseen characters still encode (bytes), nothing is unknown
    assert tokenizer.unk_token is None
    assert tokenizer.decode(tokenizer("日本語 ✓")["input_ids"]) == "日本語 ✓"
    with pytest.raises(ValueError, match="vocab_size"):
        tc.train_bpe_tokenizer(["abc"], vocab_size=100)


def test_digits_one_per_token(tokenizer):
    assert tokenizer.tokenize("12345") == ["1", "2", "3", "4", "5"]
    assert len(tokenizer("12345", add_special_tokens=False)["input_ids"]) == 5
    pieces = tokenizer.tokenize("Mia has 120 - 13 = 107 apples.")
    assert [p for p in pieces if any(ch.isdigit() for ch in p)] == list("12013107")


def test_special_tokens(tokenizer):
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.bos_token is None and tokenizer.bos_token_id is None
    assert tokenizer.padding_side == "left"
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in tc.SPECIAL_TOKENS}
    assert len(set(ids.values())) == 3
    assert tokenizer.eos_token_id == ids["<|im_end|>"] != tokenizer.pad_token_id == ids["<|endoftext|>"]
    for token, i in ids.items():
        assert tokenizer(token, add_special_tokens=False)["input_ids"] == [i]
        assert tokenizer(f"a{token}b", add_special_tokens=False)["input_ids"][1] == i
    # no BOS/EOS is added to plain text
    assert tokenizer("hi")["input_ids"] == tokenizer("hi", add_special_tokens=False)["input_ids"]
    assert set(tokenizer.all_special_tokens) == set(tc.SPECIAL_TOKENS)


def test_chat_template(tokenizer):
    text = tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=False)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    conversation = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
    ]
    assert tokenizer.apply_chat_template(conversation, tokenize=False) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n"
    )
    ids = tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=True, return_dict=False)
    assert list(ids) == tokenizer(text, add_special_tokens=False)["input_ids"]
    im_start = tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert tokenizer.convert_ids_to_tokens(ids) == ["<|im_start|>", "user", "Ċ", "h", "i", "<|im_end|>", "Ċ", "<|im_start|>", "assistant", "Ċ"]
    assert ids[0] == im_start


def test_tokenizer_round_trip(tmp_path, tokenizer):
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.chat_template == tokenizer.chat_template == tc.CHAT_TEMPLATE
    assert (loaded.eos_token, loaded.pad_token, loaded.bos_token) == ("<|im_end|>", "<|endoftext|>", None)
    assert (loaded.eos_token_id, loaded.pad_token_id) == (tokenizer.eos_token_id, tokenizer.pad_token_id)
    assert loaded.padding_side == "left"
    assert len(loaded) == len(tokenizer)
    for text in TEXTS:
        ids = tokenizer(text)["input_ids"]
        assert loaded(text)["input_ids"] == ids
        assert loaded.decode(ids) == tokenizer.decode(ids) == text
    assert loaded.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=False) == (
        tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=False)
    )
    batch = loaded(["hi", "Mia has 7 apples."], padding=True)["input_ids"]
    assert batch[0][0] == loaded.pad_token_id and batch[1][0] != loaded.pad_token_id


def test_build_tiny_qwen2(tokenizer):
    state = torch.random.get_rng_state()
    model = tc.build_tiny_qwen2(tokenizer, seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is untouched
    same, other = tc.build_tiny_qwen2(tokenizer, seed=1), tc.build_tiny_qwen2(tokenizer, seed=2)
    params = dict(model.named_parameters())
    assert all(torch.equal(params[k], v) for k, v in same.named_parameters())
    assert not all(torch.equal(params[k], v) for k, v in other.named_parameters())
    cfg = model.config
    assert (cfg.vocab_size, cfg.hidden_size, cfg.num_hidden_layers, cfg.head_dim) == (len(tokenizer), 64, 2, 32)
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.intermediate_size) == (2, 1, 128)
    assert cfg.tie_word_embeddings is False
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
    assert cfg._attn_implementation == "sdpa"
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert (cfg.eos_token_id, cfg.pad_token_id, cfg.bos_token_id) == (tokenizer.eos_token_id, tokenizer.pad_token_id, None)
    gen = model.generation_config
    assert (gen.eos_token_id, gen.pad_token_id) == (tokenizer.eos_token_id, tokenizer.pad_token_id)


def test_checkpoint_round_trip(checkpoint, tokenizer):
    assert (checkpoint / "model.safetensors").is_file()
    assert (checkpoint / "tokenizer.json").is_file()
    assert not list(checkpoint.glob("*.bin"))
    model = tc.build_tiny_qwen2(tokenizer, seed=0).eval()
    loaded = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    tok = AutoTokenizer.from_pretrained(checkpoint)
    assert type(loaded).__name__ == "Qwen2ForCausalLM"
    assert loaded.dtype == torch.float32
    assert tok.model_max_length == loaded.config.max_position_embeddings == 512
    assert loaded.generation_config.eos_token_id == tok.eos_token_id
    assert loaded.generation_config.pad_token_id == tok.pad_token_id
    prompt = tok.apply_chat_template([{"role": "user", "content": "Mia has 7 apples."}], add_generation_prompt=True, tokenize=False)
    batch = tok([prompt, "hi"], return_tensors="pt", padding=True)
    with torch.no_grad():
        assert torch.equal(loaded(**batch).logits, model(**batch).logits)
        out = loaded.generate(**batch, max_new_tokens=4, do_sample=False)
    width = batch["input_ids"].shape[1]
    assert out.shape[0] == 2 and width < out.shape[1] <= width + 4
    assert torch.equal(out[:, :width], batch["input_ids"])


def test_cli_from_jsonl_and_parquet(tmp_path, capsys):
    rows = wp.generate(120, seed=1)
    jsonl, parquet = wp.write(rows, tmp_path / "d.jsonl"), wp.write(rows, tmp_path / "d.parquet")
    texts = tc.read_texts(jsonl)
    assert texts == tc.read_texts(parquet) == [r[k] for r in rows for k in ("question", "answer")]
    assert tc.read_texts(parquet, ["question"]) == [r["question"] for r in rows]
    with pytest.raises(KeyError, match="nope"):
        tc.read_texts(parquet, ["nope"])
    with pytest.raises(ValueError, match=r"\.txt"):
        tc.read_texts(tmp_path / "d.txt")
    tc.main([str(tmp_path / "ckpt"), "--corpus", str(jsonl), "--text-keys", "question,answer", "--vocab-size", "300"])
    assert "wrote" in capsys.readouterr().out
    tok = AutoTokenizer.from_pretrained(tmp_path / "ckpt")
    assert len(tok) <= 300
    assert bpe(tok) == bpe(tc.train_bpe_tokenizer(texts, 300))
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt")
    assert model.config.vocab_size == len(tok)
