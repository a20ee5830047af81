"""Tokenizer, model construction, `from_pretrained` on a local folder, and the `kernels` name."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from policies.model import build_policy, load_model, save_policy
from policies.tokenizer import ASSET, build_char_tokenizer, load_tokenizer
from rl.config import PolicyConfig

REPO = Path(__file__).resolve().parents[1]


def test_shipped_tokenizer_is_rebuilt_identically():
    import json

    assert json.loads(build_char_tokenizer().to_str()) == json.loads(ASSET.read_text())


def test_tokenizer_round_trip_and_specials():
    tok = load_tokenizer()
    for text in ["12+345=", "3x+5=20;x=", "1/2+1/3=", "a b\nc", "-0"]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert len(ids) == len(text), "one token per character"
        assert tok.decode(ids) == text
    assert tok.unk_token_id not in tok("0123456789+-*/=x", add_special_tokens=False)["input_ids"]
    assert len({tok.pad_token_id, tok.eos_token_id, tok.bos_token_id, tok.unk_token_id}) == 4
    assert tok.padding_side == "left"


def test_built_model_shapes_and_determinism():
    cfg = PolicyConfig(hidden_size=64, num_layers=2, num_heads=2, head_dim=32, intermediate_size=128)
    m1, tok = build_policy(cfg, seed=3)
    m2, _ = build_policy(cfg, seed=3)
    m3, _ = build_policy(cfg, seed=4)
    for (k, a), b, c in zip(m1.state_dict().items(), m2.state_dict().values(), m3.state_dict().values()):
        assert torch.equal(a, b), k
    assert any(not torch.equal(a, c) for a, c in zip(m1.state_dict().values(), m3.state_dict().values()))
    assert m1.config.head_dim == 32 and m1.config.vocab_size == len(tok)
    ids = torch.tensor([tok("1+2=", add_special_tokens=False)["input_ids"]])
    assert m1(input_ids=ids).logits.shape == (1, 4, len(tok))


def test_qwen2_builds_with_biases():
    cfg = PolicyConfig(arch="qwen2", hidden_size=64, num_layers=1, num_heads=2, num_kv_heads=1, head_dim=32, intermediate_size=128)
    model, _ = build_policy(cfg)
    assert model.config.model_type == "qwen2"
    assert model.model.layers[0].self_attn.q_proj.bias is not None


def test_from_pretrained_local_folder(tmp_path):
    cfg = PolicyConfig(hidden_size=64, num_layers=2, num_heads=2, head_dim=32, intermediate_size=128)
    model, tok = build_policy(cfg, seed=1)
    save_policy(model, tok, tmp_path / "policy")
    reloaded, tok2 = build_policy(PolicyConfig(path=str(tmp_path / "policy")))
    ids = torch.tensor([tok("12+3=", add_special_tokens=False)["input_ids"]])
    assert torch.allclose(model(input_ids=ids).logits, reloaded(input_ids=ids).logits, atol=1e-6)
    assert tok2("12+3=", add_special_tokens=False)["input_ids"] == ids[0].tolist()
    assert torch.equal(load_model(tmp_path / "policy").lm_head.weight, model.lm_head.weight)


def test_our_kernels_package_does_not_pose_as_hf_kernels():
    """transformers probes for the Hugging Face `kernels` package by import name; ours must not pass for it."""
    import kernels
    from transformers.utils import import_utils

    assert Path(kernels.__file__).resolve().is_relative_to(REPO)
    assert importlib.util.find_spec("kernels") is not None
    assert import_utils.is_kernels_available() is False
