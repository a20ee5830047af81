"""Asynchronous rollouts (`rollout.max_staleness`): the staleness bound on a real Ray run, and the
off-policy correction (the PPO ratio against the sampler's log-probs)."""

from __future__ import annotations

import copy
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from mlflow.tracking import MlflowClient

from envs.registry import make_env
from policies.model import build_policy
from rl.batch import build_batch
from rl.cli import main
from rl.config import load_config
from rl.learner import Learner
from rl.staleness import staleness, staleness_metrics, too_stale
from rl.tracking import default_uri
from rollout.engines.base import SamplingParams
from rollout.engines.hf import HFEngine
from rollout.episode import Episode, Turn

TINY = """
run: {{name: async{k}, seed: 5, runs_dir: {runs}}}
cluster: {{num_cpus: 2}}
policy: {{hidden_size: 64, num_layers: 2, num_heads: 2, head_dim: 32, intermediate_size: 128, max_position_embeddings: 32}}
sft: {{enabled: false}}
env: {{name: math, levels: [1], eval_size: 8}}
rollout: {{group_size: 4, max_new_tokens: 4, max_staleness: {k}}}
rewards:
  outcome: {{weight: 1.0}}
  format: {{weight: 0.5}}
algorithm: {{dynamic_sampling: false}}
optimizer: {{lr: 3.0e-3, adamw_lr: 3.0e-4}}
# an evaluation every step swaps the weight average into the workers: no training batch may be
# sampled from it (its version, -2, would show in the episodes or force a regeneration)
train: {{steps: {steps}, tasks_per_step: 4, eval_every: 1, eval_ema: 0.5}}
tracking: {{progress: false}}
checkpoint: {{every: 0}}
"""


def _episode(version: int) -> Episode:
    return Episode(task_id="t", env="math", prompt="", prompt_ids=[1], turns=[], policy_version=version)


def test_staleness_is_learner_version_minus_sampler_version():
    eps = [_episode(3), _episode(5), _episode(4)]
    assert staleness(eps, 5) == [2, 0, 1]
    assert staleness_metrics(eps, 5) == {"rollout/staleness_mean": 1.0, "rollout/staleness_max": 2.0}
    assert too_stale(eps, 5, 1) and not too_stale(eps, 5, 2)
    # a worker that never received weights (version -1) is too stale for any bound
    assert too_stale([_episode(-1)], 5, 8)
    assert staleness_metrics([_episode(-1)], 5) == {}


@pytest.fixture(scope="module")
def ray_session():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    yield
    ray.shutdown()


def _train(tmp_path: Path, k: int, steps: int) -> Path:
    exp = tmp_path / f"async{k}.yaml"
    exp.write_text(TINY.format(k=k, steps=steps, runs=tmp_path / "runs"))
    run_dir = tmp_path / "runs" / f"async{k}"
    assert main(["train", str(exp), "--run-dir", str(run_dir)]) == 0
    return run_dir


def _metric(run_dir: Path, key: str) -> dict[int, float]:
    client = MlflowClient(default_uri(run_dir.parent))
    run_id = (run_dir / "mlflow_run_id").read_text().strip()
    return {m.step: m.value for m in client.get_metric_history(run_id, key)}


@pytest.mark.slow
@pytest.mark.parametrize("k", [0, 1, 2])
def test_every_batch_respects_the_staleness_bound_and_it_is_logged(tmp_path, ray_session, k):
    steps = 5
    run_dir = _train(tmp_path, k, steps)
    lags = {}
    for step in range(1, steps + 1):
        versions = pq.read_table(run_dir / "episodes" / f"step_{step:06d}.parquet").column("policy_version").to_pylist()
        assert min(versions) >= 0
        lags[step] = [step - 1 - v for v in versions]  # the learner trains on step s with version s - 1
    assert all(0 <= lag <= k for ls in lags.values() for lag in ls), lags
    logged = _metric(run_dir, "rollout/staleness_max")
    assert sorted(logged) == list(range(1, steps + 1))
    assert logged == {s: float(max(ls)) for s, ls in lags.items()}
    if k == 0:
        assert set(logged.values()) == {0.0}
    else:
        # the first k batches are all sampled by the initial weights; later ones lag by exactly k
        assert max(logged.values()) == k
        assert [logged[s] for s in range(1, k + 2)] == [float(s - 1) for s in range(1, k + 2)]
        assert set(_metric(run_dir, "rollout/stale_regenerated").values()) == {0.0}
        assert _metric(run_dir, "time/rollout_wait_s")


def test_config_bounds_max_staleness():
    from rl.config import ConfigError

    assert load_config("experiments/quickstart.yaml", ["rollout.max_staleness=2"]).rollout.max_staleness == 2
    with pytest.raises(ConfigError, match="rollout.max_staleness"):
        load_config("experiments/quickstart.yaml", ["rollout.max_staleness=-1"])


def _sampled_batch(engine: HFEngine, tokenizer, env, seed: int):
    tasks = env.sample(4, __import__("numpy").random.default_rng(seed))
    prompts = [tokenizer(t.prompt, add_special_tokens=False)["input_ids"] for t in tasks for _ in range(2)]
    completions = engine.generate(prompts, SamplingParams(max_new_tokens=4, temperature=1.0), seed)
    episodes = [
        Episode(task_id=str(i), env="math", prompt="", prompt_ids=p, turns=[Turn("assistant", "", c.token_ids, c.logprobs, True)], group=i // 2)
        for i, (p, c) in enumerate(zip(prompts, completions))
    ]
    adv = torch.tensor([1.0, -1.0] * 4).tolist()
    return build_batch(episodes, adv, tokenizer.pad_token_id)


def test_the_ratio_is_against_the_sampler_so_a_stale_batch_is_off_policy():
    cfg = load_config("experiments/quickstart.yaml", ["sft.enabled=false", "optimizer.name=adamw", "optimizer.lr=1e-2", "optimizer.adamw_lr=1e-2"])
    model, tok = build_policy(cfg.policy, seed=1)
    env = make_env("math", levels=[1])
    learner = Learner.from_config(model, cfg)
    sampler = HFEngine(copy.deepcopy(model), tok.eos_token_id, tok.pad_token_id)  # a rollout worker's copy

    fresh = _sampled_batch(sampler, tok, env, seed=0)
    stale = _sampled_batch(sampler, tok, env, seed=1)  # sampled now, trained on one update later
    m_fresh = learner.update(fresh)  # version 0 trains on a version-0 batch
    assert m_fresh["learner/ratio_min"] == pytest.approx(1.0, abs=1e-4)
    assert m_fresh["learner/ratio_max"] == pytest.approx(1.0, abs=1e-4)
    m_stale = learner.update(stale)  # version 1 trains on a version-0 batch: staleness 1
    assert abs(m_stale["learner/ratio_max"] - 1.0) > 1e-3 or abs(m_stale["learner/ratio_min"] - 1.0) > 1e-3
    assert m_stale["learner/sampler_kl"] > 100 * m_fresh["learner/sampler_kl"]


@pytest.mark.slow
def test_resume_with_async_rollouts_regenerates_in_flight_batches(tmp_path, ray_session):
    exp = tmp_path / "async1.yaml"
    exp.write_text(TINY.format(k=1, steps=2, runs=tmp_path / "runs").replace("checkpoint: {every: 0}", "checkpoint: {every: 1}"))
    run_dir = tmp_path / "runs" / "split"
    assert main(["train", str(exp), "--run-dir", str(run_dir)]) == 0  # stops with batch 3 never consumed
    assert main(["train", "--resume", str(run_dir), "train.steps=4"]) == 0
    assert sorted(_metric(run_dir, "rollout/staleness_max")) == [1, 2, 3, 4]  # each step exactly once
    logged = _metric(run_dir, "rollout/staleness_max")
    # step 3 is the first after the resume: regenerated with the resumed weights (version 2), not stale
    assert logged[3] == 0.0 and logged[4] == 1.0
    versions = pq.read_table(run_dir / "episodes" / "step_000003.parquet").column("policy_version").to_pylist()
    assert set(versions) == {2}
