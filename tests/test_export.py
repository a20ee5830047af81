"""`swarmrl export`: a run's checkpoint as a Hugging Face folder that stock transformers and
vLLM load, with the trained policy's logits.

The run directory is made by hand the way the trainer leaves it: `policy/` (config, generation
config, tokenizer with a chat template, no weights) and checkpoints whose weights differ from
step to step and from their average, so that picking the wrong file shows.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from policies.model import build_policy
from policies.qk_probe import QK_PROBE_ATTENTION
from rl.checkpoint import save_checkpoint, save_policy_skeleton
from rl.cli import main
from rl.config import PolicyConfig, to_yaml, validate_config

CHAT_TEMPLATE = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}"
TEXTS = ["1+2=", "123+456=", "7-9=", "Add, then check: 12+34="]


def perturbed(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """The model's weights plus seeded noise: a 'trained' state unlike the init and every other step."""
    g = torch.Generator().manual_seed(seed)
    return {k: v + 0.05 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v.clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run directory with checkpoints at steps 2 (no average) and 4 (with `ema.pt`)."""
    run_dir = tmp_path_factory.mktemp("run")
    policy = {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "head_dim": 32, "intermediate_size": 128}
    model, tok = build_policy(PolicyConfig(**policy), seed=5)
    tok.chat_template = CHAT_TEMPLATE
    (run_dir / "config.yaml").write_text(to_yaml(validate_config({"policy": policy, "env": {"name": "math"}})))
    save_policy_skeleton(model, tok, None, run_dir)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    weights = {"step2": perturbed(model, 2), "step4": perturbed(model, 4), "ema4": perturbed(model, 44)}
    model.load_state_dict(weights["step2"])
    save_checkpoint(run_dir, 2, model, optimizer, {})
    model.load_state_dict(weights["step4"])
    save_checkpoint(run_dir, 4, model, optimizer, {}, average=weights["ema4"])
    return run_dir, model.eval(), tok, weights


def exported_weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "model.safetensors")


def assert_weights_equal(saved: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert saved.keys() <= expected.keys()
    for k, v in saved.items():
        assert torch.equal(v, expected[k]), k


@torch.no_grad()
def test_export_loads_in_stock_transformers_with_the_policys_logits(run, tmp_path, capfd):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir, policy, tok, _ = run
    out = tmp_path / "export"
    assert main(["export", str(run_dir), str(out)]) == 0
    printed = capfd.readouterr().out
    assert str(out) in printed and "from_pretrained" in printed
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))
    config = (out / "config.json").read_text()
    assert QK_PROBE_ATTENTION not in config and "attn_implementation" not in config

    loaded, info = AutoModelForCausalLM.from_pretrained(out, attn_implementation="sdpa", output_loading_info=True)
    assert (info["missing_keys"], info["unexpected_keys"], info["mismatched_keys"]) == (set(), set(), set())
    logs = " ".join(capfd.readouterr()).lower()
    assert not any(word in logs for word in ("missing", "unexpected", "newly initialized", "not initialized")), logs
    assert loaded.dtype == torch.float32 and loaded.config._attn_implementation == "sdpa"

    batch = tok(TEXTS, return_tensors="pt", padding=True, add_special_tokens=False)
    expected = policy(**batch).logits  # the trained policy, QK-probe attention, latest checkpoint
    torch.testing.assert_close(loaded.eval()(**batch).logits, expected, atol=1e-5, rtol=0)

    stock_tok = AutoTokenizer.from_pretrained(out)
    assert stock_tok("12+34=", add_special_tokens=False)["input_ids"] == tok("12+34=", add_special_tokens=False)["input_ids"]
    assert stock_tok.chat_template == CHAT_TEMPLATE
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == tok.eos_token_id


@torch.no_grad()
def test_a_qwen2_policy_with_tied_embeddings_exports_too(tmp_path):
    from transformers import AutoModelForCausalLM

    policy = {"arch": "qwen2", "hidden_size": 64, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2, "head_dim": 32, "intermediate_size": 128, "tie_embeddings": True}
    model, tok = build_policy(PolicyConfig(**policy), seed=6)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(to_yaml(validate_config({"policy": policy, "env": {"name": "math"}})))
    save_policy_skeleton(model, tok, None, run_dir)
    model.load_state_dict(perturbed(model, 7))
    save_checkpoint(run_dir, 1, model, torch.optim.SGD(model.parameters(), lr=0.1), {})
    assert main(["export", str(run_dir), str(tmp_path / "export")]) == 0
    loaded, info = AutoModelForCausalLM.from_pretrained(tmp_path / "export", attn_implementation="sdpa", output_loading_info=True)
    assert (info["missing_keys"], info["unexpected_keys"]) == (set(), set())
    assert loaded.config.model_type == "qwen2" and loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()
    batch = tok(TEXTS, return_tensors="pt", padding=True, add_special_tokens=False)
    torch.testing.assert_close(loaded.eval()(**batch).logits, model.eval()(**batch).logits, atol=1e-5, rtol=0)


def test_step_and_average_choose_the_weights(run, tmp_path):
    run_dir, _, _, weights = run
    cases = {"latest": ([], "step4"), "step2": (["--step", "2"], "step2"), "average": (["--average"], "ema4"), "average4": (["--average", "--step", "4"], "ema4")}
    for name, (flags, expected) in cases.items():
        out = tmp_path / name
        assert main(["export", str(run_dir), str(out), *flags]) == 0
        assert_weights_equal(exported_weights(out), weights[expected])
    # the three sources really differ, so the checks above tell them apart
    k = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(weights["step2"][k], weights["step4"][k]) and not torch.equal(weights["step4"][k], weights["ema4"][k])


def test_force_replaces_an_earlier_export_only(run, tmp_path, capsys):
    run_dir, _, _, weights = run
    out = tmp_path / "export"
    assert main(["export", str(run_dir), str(out), "--step", "2"]) == 0
    assert main(["export", str(run_dir), str(out)]) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and "--force" in err
    assert main(["export", str(run_dir), str(out), "--force"]) == 0
    assert_weights_equal(exported_weights(out), weights["step4"])
    unrelated = tmp_path / "notes"
    unrelated.mkdir()
    (unrelated / "todo.txt").write_text("keep me")
    assert main(["export", str(run_dir), str(unrelated), "--force"]) == 2
    assert "not an earlier export" in capsys.readouterr().err
    assert (unrelated / "todo.txt").read_text() == "keep me"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["export", str(run_dir), str(empty)]) == 0 and (empty / "config.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left behind


def test_errors_exit_2_and_name_the_problem(run, tmp_path, capsys):
    run_dir, _, _, _ = run
    no_ckpt = tmp_path / "fresh_run"
    no_ckpt.mkdir()
    (no_ckpt / "config.yaml").write_text((run_dir / "config.yaml").read_text())
    (no_ckpt / "policy").symlink_to(run_dir / "policy")
    out = str(tmp_path / "out")
    cases = [
        (["export", str(tmp_path / "nothing"), out], "not a run directory"),
        (["export", str(no_ckpt), out], "no checkpoints"),
        (["export", str(run_dir), out, "--step", "3"], "available steps: 2, 4"),
        (["export", str(run_dir), out, "--step", "2", "--average"], "no ema.pt"),
        (["export", str(run_dir), str(run_dir / "policy"), "--force"], "would overwrite the run"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err, (argv, err)
    assert not (tmp_path / "out").exists()
    assert (run_dir / "policy" / "config.json").is_file()


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed (the `vllm` extra: pip install -e '.[vllm]')")
def test_vllm_loads_the_export_and_decodes_like_transformers(run, tmp_path, monkeypatch):
    """Stock vLLM, given only the folder (its own tokenizer and config), greedy-decodes the tokens
    transformers' `generate` does."""
    from transformers import AutoModelForCausalLM

    run_dir, _, tok, _ = run
    out = tmp_path / "export"
    assert main(["export", str(run_dir), str(out)]) == 0
    prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in TEXTS]
    hf = AutoModelForCausalLM.from_pretrained(out, attn_implementation="sdpa").eval()
    expected = []
    with torch.no_grad():
        for p in prompts:
            ids = hf.generate(torch.tensor([p]), do_sample=False, max_new_tokens=12, pad_token_id=tok.pad_token_id)
            expected.append(ids[0, len(p) :].tolist())
    assert sum(map(len, expected)) > 2 * len(prompts)  # real continuations, not instant EOS

    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # engine in this process, as the project runs it
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    import vllm

    llm = vllm.LLM(model=str(out), dtype="float32", max_model_len=256, seed=0, enforce_eager=True)  # skips graph compilation, the slow part of start-up
    results = llm.generate([{"prompt_token_ids": p} for p in prompts], vllm.SamplingParams(temperature=0, max_tokens=12))
    assert [list(r.outputs[0].token_ids) for r in results] == expected
    assert results[0].outputs[0].text == tok.decode(expected[0], skip_special_tokens=True)
