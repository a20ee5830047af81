"""The vision-language policy: build from config, save → load, processor, engine, learner agreement."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from envs.vision import VisionEnv
from policies.model import build_policy, load_model
from policies.tokenizer import load_tokenizer
from policies.vlm import IMAGE_TOKEN, load_processor, processor_for, tokens_per_image
from rl.batch import build_batch
from rl.config import load_config
from rl.learner import Learner
from rollout.collect import encode_prompt
from rollout.engines.base import SamplingParams
from rollout.engines.hf import HFEngine
from rollout.engines.multimodal import ImageInputs
from rollout.episode import Episode, Turn

SMALL = [
    "sft.enabled=false",
    "policy.hidden_size=64",
    "policy.num_layers=2",
    "policy.num_heads=2",
    "policy.intermediate_size=128",
    "policy.vision.num_layers=1",
]


@pytest.fixture(scope="module")
def cfg():
    return load_config("experiments/vision.yaml", SMALL)


@pytest.fixture(scope="module")
def vlm(cfg):
    model, tok = build_policy(cfg.policy, seed=1)
    return model, tok, processor_for(cfg.policy, tok)


@pytest.fixture(scope="module")
def tasks():
    return VisionEnv(levels=(1, 2, 3)).sample(6, np.random.default_rng(0))


def engine_for(model, tok, proc, batch_size=256):
    images = ImageInputs(proc.image_processor, model.config.image_token_id, tokens_per_image(model.config))
    return HFEngine(model, tok.eos_token_id, tok.pad_token_id, batch_size, image_inputs=images)


def sampled_episodes(model, tok, proc, tasks, *, max_new_tokens, seed, batch_size) -> list[Episode]:
    """One episode per task, sampled at temperature 1 by the hf engine, with its image bytes."""
    prompts = [encode_prompt(None, t, proc) for t in tasks]
    completions = engine_for(model, tok, proc, batch_size).generate(prompts, SamplingParams(max_new_tokens=max_new_tokens, temperature=1.0), seed=seed)
    return [
        Episode(task_id=t.id, env="vision", prompt=t.prompt, prompt_ids=p["prompt_token_ids"], group=i, images=list(t.images),
                turns=[Turn(role="assistant", text="", token_ids=c.token_ids, logprobs=c.logprobs, trainable=True)])
        for i, (t, p, c) in enumerate(zip(tasks, prompts, completions))
    ]


def test_image_token_extends_the_text_vocabulary_without_moving_ids(vlm):
    _, tok, _ = vlm
    text = load_tokenizer()
    assert tok.convert_tokens_to_ids(IMAGE_TOKEN) == len(text)
    assert tok("how many shapes? 42", add_special_tokens=False)["input_ids"] == text("how many shapes? 42", add_special_tokens=False)["input_ids"]


def test_processor_needs_no_torchvision_and_expands_the_placeholder(vlm, tasks):
    model, _, proc = vlm
    assert importlib.util.find_spec("torchvision") is None
    assert type(proc.image_processor).__name__.endswith("Pil")
    prompt = encode_prompt(None, tasks[0], proc)
    ids = prompt["prompt_token_ids"]
    n = tokens_per_image(model.config)
    assert n == 36 and ids[:n] == [model.config.image_token_id] * n and model.config.image_token_id not in ids[n:]
    assert prompt["multi_modal_data"]["image"].size == (48, 48)


def test_forward_reads_the_image(vlm, tasks):
    model, _, proc = vlm
    a, b = (encode_prompt(None, t, proc) for t in tasks[:2])
    ids = torch.tensor([a["prompt_token_ids"]])
    with torch.no_grad():
        pa = proc.image_processor([a["multi_modal_data"]["image"]], return_tensors="pt")["pixel_values"]
        pb = proc.image_processor([b["multi_modal_data"]["image"]], return_tensors="pt")["pixel_values"]
        la = model(input_ids=ids, pixel_values=pa).logits[0, -1]
        lb = model(input_ids=ids, pixel_values=pb).logits[0, -1]
    assert la.shape == (model.config.text_config.vocab_size,)
    assert not torch.allclose(la, lb)  # same text, another image: another prediction


def test_save_load_round_trip(vlm, tasks, tmp_path):
    model, tok, proc = vlm
    model.save_pretrained(tmp_path)
    proc.save_pretrained(tmp_path)
    model2, proc2 = load_model(tmp_path), load_processor(tmp_path)
    assert type(model2) is type(model)
    p1, p2 = encode_prompt(None, tasks[0], proc), encode_prompt(None, tasks[0], proc2)
    assert p1["prompt_token_ids"] == p2["prompt_token_ids"]
    params = SamplingParams(max_new_tokens=6, temperature=1.0)
    out1 = engine_for(model, tok, proc).generate([p1, p1], params, seed=3)
    out2 = engine_for(model2, proc2.tokenizer, proc2).generate([p2, p2], params, seed=3)
    assert [c.token_ids for c in out1] == [c.token_ids for c in out2]
    np.testing.assert_allclose([c.logprobs for c in out1], [c.logprobs for c in out2], atol=1e-5)


def test_engine_accepts_both_placeholder_forms_and_batches_like_single_prompts(vlm, tasks):
    model, tok, proc = vlm
    eng = engine_for(model, tok, proc)
    prompts = [encode_prompt(None, t, proc) for t in tasks]
    n = tokens_per_image(model.config)
    short = [{**p, "prompt_token_ids": p["prompt_token_ids"][n - 1 :]} for p in prompts]  # one placeholder per image (vLLM style)
    greedy = SamplingParams(max_new_tokens=5, temperature=0)
    full = eng.generate(prompts, greedy, seed=0)
    assert [c.token_ids for c in eng.generate(short, greedy, seed=0)] == [c.token_ids for c in full]
    one_by_one = engine_for(model, tok, proc, batch_size=1).generate(prompts, greedy, seed=0)  # no left padding
    assert [c.token_ids for c in one_by_one] == [c.token_ids for c in full]
    with pytest.raises(ValueError, match="image tokens"):
        eng.generate([{**prompts[0], "prompt_token_ids": prompts[0]["prompt_token_ids"][2:]}], greedy, seed=0)


def test_text_engine_rejects_images_and_text_prompts_still_work(vlm, tasks):
    model, tok, proc = vlm
    eng = HFEngine(model, tok.eos_token_id, tok.pad_token_id)
    text = tok("hello", add_special_tokens=False)["input_ids"]
    assert len(eng.generate([text], SamplingParams(max_new_tokens=3), seed=0)) == 1
    with pytest.raises(ValueError, match="takes no images"):
        eng.generate([encode_prompt(None, tasks[0], proc)], SamplingParams(max_new_tokens=3), seed=0)


@pytest.mark.parametrize("chunked", [True, False])
def test_learner_logprobs_equal_sampler_logprobs(cfg, vlm, tasks, chunked):
    """At temperature 1 on a fresh batch the importance ratio is 1: the learner sees the same
    image tokens and pixel values the sampler saw."""
    model, tok, proc = vlm
    episodes = sampled_episodes(model, tok, proc, tasks, max_new_tokens=6, seed=11, batch_size=4)
    batch = build_batch(episodes, [1.0] * len(episodes), tok.pad_token_id, proc.image_processor)
    assert batch.pixel_values.shape == (len(tasks), 1, 3, 48, 48)
    learner = Learner.from_config(model, cfg.model_copy(update={"algorithm": cfg.algorithm.model_copy(update={"chunked_logprobs": chunked})}))
    with torch.no_grad():
        lp, ent = learner._logprobs(model, batch)
    m = batch.completion_mask.bool()
    assert torch.isfinite(ent[m]).all()
    ratio = (lp[m] - batch.old_logprobs[m]).exp()
    torch.testing.assert_close(ratio, torch.ones_like(ratio), atol=1e-4, rtol=0)
    # without the pixel values the same ids give other log-probs: the images matter
    blind = batch.select(slice(None))
    blind.pixel_values = torch.zeros_like(blind.pixel_values)
    with torch.no_grad():
        lp_blind, _ = learner._logprobs(model, blind)
    assert not torch.allclose(lp_blind[m], lp[m], atol=1e-3)


def test_frozen_vision_tower_stays_put_while_projector_and_lm_learn(cfg, tasks):
    """`optimizer.freeze_vision_tower`: an RL update leaves every tower weight bit-identical, the
    optimizer holds none of them, and the projector and the language model still move."""
    model, tok = build_policy(cfg.policy, seed=3)
    proc = processor_for(cfg.policy, tok)
    episodes = sampled_episodes(model, tok, proc, tasks, max_new_tokens=4, seed=5, batch_size=6)
    batch = build_batch(episodes, [1.0, -1.0] * (len(episodes) // 2), tok.pad_token_id, proc.image_processor)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    frozen_cfg = cfg.model_copy(update={"optimizer": cfg.optimizer.model_copy(update={"freeze_vision_tower": True})})
    learner = Learner.from_config(model, frozen_cfg)
    tower = {n for n, _ in model.named_parameters() if ".vision_tower." in f".{n}"}
    assert tower and all(not p.requires_grad for n, p in model.named_parameters() if n in tower)
    in_optimizer = {id(p) for g in learner.optimizer.param_groups for p in g["params"]}
    assert not any(id(p) in in_optimizer for n, p in model.named_parameters() if n in tower)
    learner.update(batch)
    moved = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert not moved & tower
    assert any("multi_modal_projector" in n for n in moved) and any("language_model" in n for n in moved)


def test_freezing_the_vision_tower_of_a_text_policy_is_a_config_error():
    from policies.vlm import freeze_vision_tower
    from rl.config import ConfigError

    with pytest.raises(ConfigError, match="optimizer.freeze_vision_tower"):
        load_config("experiments/quickstart.yaml", ["optimizer.freeze_vision_tower=true"])
    text_cfg = load_config("experiments/quickstart.yaml")
    with pytest.raises(ValueError, match="no vision tower"):
        freeze_vision_tower(build_policy(text_cfg.policy)[0])


def test_batch_without_image_processor_is_a_clear_error(vlm, tasks):
    _, tok, _ = vlm
    e = Episode(task_id="x", env="vision", prompt="", prompt_ids=[5, 6], images=list(tasks[0].images),
                turns=[Turn(role="assistant", text="", token_ids=[7], logprobs=[-1.0], trainable=True)])
    with pytest.raises(ValueError, match="image_processor"):
        build_batch([e], [1.0], tok.pad_token_id)


def test_vision_env_needs_a_vlm_policy():
    from rl.config import ConfigError

    with pytest.raises(ConfigError, match="policy.arch"):
        load_config("experiments/vision.yaml", ["policy.arch=llama"])
    with pytest.raises(ConfigError, match="patch_size"):
        load_config("experiments/vision.yaml", ["policy.vision.patch_size=7"])


def test_engine_never_samples_the_image_placeholder_and_learner_agrees(cfg, tasks):
    """Even when the placeholder is by far the likeliest next token, it is not sampled, and the
    learner's log-probs (normalised over the same vocabulary) still match the sampler's."""
    model, tok = build_policy(cfg.policy, seed=2)
    proc = processor_for(cfg.policy, tok)
    image_id = model.config.image_token_id


    def favour_placeholder(module, args, logits):  # a huge logit for the placeholder at every position
        logits = logits.clone()
        logits[..., image_id] += 100.0
        return logits

    model.get_output_embeddings().register_forward_hook(favour_placeholder)
    prompts = [encode_prompt(None, t, proc) for t in tasks]
    with torch.no_grad():
        ids = torch.tensor([prompts[0]["prompt_token_ids"]])
        pv = proc.image_processor([prompts[0]["multi_modal_data"]["image"]], return_tensors="pt")["pixel_values"]
        assert int(model(input_ids=ids, pixel_values=pv).logits[0, -1].argmax()) == image_id
    out = engine_for(model, tok, proc).generate(prompts, SamplingParams(max_new_tokens=6, temperature=1.0), seed=0)
    assert all(image_id not in c.token_ids for c in out)
    episodes = [
        Episode(task_id=t.id, env="vision", prompt=t.prompt, prompt_ids=p["prompt_token_ids"], group=i, images=list(t.images),
                turns=[Turn(role="assistant", text="", token_ids=c.token_ids, logprobs=c.logprobs, trainable=True)])
        for i, (t, p, c) in enumerate(zip(tasks, prompts, out))
    ]
    batch = build_batch(episodes, [1.0] * len(episodes), tok.pad_token_id, proc.image_processor)
    for chunked in (True, False):
        learner = Learner.from_config(model, cfg.model_copy(update={"algorithm": cfg.algorithm.model_copy(update={"chunked_logprobs": chunked})}))
        with torch.no_grad():
            lp, ent = learner._logprobs(model, batch)
        m = batch.completion_mask.bool()
        torch.testing.assert_close(lp[m], batch.old_logprobs[m], atol=1e-4, rtol=0)
        assert torch.isfinite(ent[m]).all()


def test_episode_images_survive_parquet_and_json_records(tasks, tmp_path):
    import hashlib

    from rollout.episode import read_parquet, write_parquet

    e = Episode(task_id=tasks[0].id, env="vision", prompt=tasks[0].prompt, prompt_ids=[1, 2], images=list(tasks[0].images),
                turns=[Turn(role="assistant", text="3", token_ids=[5], logprobs=[-0.5], trainable=True)])
    back = read_parquet(write_parquet([e], tmp_path / "s.parquet"))[0]
    assert back.images == list(tasks[0].images) and back == e
    assert e.json_record()["images"] == [hashlib.sha256(tasks[0].images[0]).hexdigest()]


def test_white_background_normalises_to_zero():
    """The scenes are mostly white: white must embed as nothing, not as one large shared vector."""
    from PIL import Image

    from policies.vlm import build_image_processor

    proc = build_image_processor(48)
    white = Image.new("RGB", (48, 48), (255, 255, 255))
    black = Image.new("RGB", (48, 48), (0, 0, 0))
    pv = proc([white, black], return_tensors="pt")["pixel_values"]  # [2, 3, 48, 48]
    assert pv.shape == (2, 3, 48, 48)
    assert torch.allclose(pv[0], torch.zeros_like(pv[0]), atol=1e-6)
    assert torch.allclose(pv[1], torch.full_like(pv[1], -2.0), atol=1e-6)


def test_vlm_sft_cache_key_covers_the_image_normalisation(tmp_path, monkeypatch):
    import policies.vlm as vlm
    from rl.sft_vlm import vlm_sft_cache_dir

    cfg = load_config("experiments/vision.yaml", [f"run.runs_dir={tmp_path}"])
    env = VisionEnv(levels=(1,), eval_size=4)
    before = vlm_sft_cache_dir(cfg, env)
    assert before == vlm_sft_cache_dir(cfg, env)
    plain = vlm.SiglipImageProcessorPil
    monkeypatch.setattr(vlm, "build_image_processor", lambda size: plain(size={"height": size, "width": size}))
    assert vlm_sft_cache_dir(cfg, env) != before
