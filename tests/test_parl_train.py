"""PARL training on a real local Ray instance and a real MLflow store: frozen sub-agents stay
frozen across updates, observations stay out of the loss, and a 2-step swarm run end to end."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient

from rl.batch import build_batch
from rl.cli import main
from rl.config import validate_config
from rl.tracking import default_uri
from rollout.episode import Episode, Turn

pytestmark = pytest.mark.slow

POLICY = {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "head_dim": 32, "intermediate_size": 128, "max_position_embeddings": 160}


def test_build_batch_masks_observations_and_keeps_single_turn_layout():
    single = Episode("t", "math", "1+1=", [1, 2, 3], [Turn("assistant", "2", [4, 5], [-0.5, -0.25], True)])
    b = build_batch([single], [1.0], pad_token_id=0)
    assert b.input_ids.tolist() == [[1, 2, 3, 4, 5]]
    assert b.completion_mask.tolist() == [[0, 0, 1, 1]] and b.old_logprobs.tolist() == [[0, 0, -0.5, -0.25]]

    multi = Episode(
        "t",
        "swarm",
        "p",
        [1, 2],
        [
            Turn("assistant", "a", [3, 4], [-1.0, -2.0], True, 0),
            Turn("tool", ">o", [5, 6, 7], [], False, 0),
            Turn("assistant", "b", [8], [-3.0], True, 1),
        ],
    )
    b = build_batch([multi, single], [1.0, -1.0], pad_token_id=0)
    assert b.input_ids[0].tolist() == [1, 2, 3, 4, 5, 6, 7, 8]
    assert b.input_ids[1].tolist() == [1, 2, 3, 4, 5, 0, 0, 0]
    # position t predicts token t+1: tokens 3, 4 (positions 2, 3) and 8 (position 7) are trained, 5-7 are not
    assert b.completion_mask[0].tolist() == [0, 1, 1, 0, 0, 0, 1]
    assert b.old_logprobs[0].tolist() == [0, -1.0, -2.0, 0, 0, 0, -3.0]
    assert b.completion_mask[1].tolist() == [0, 0, 1, 1, 0, 0, 0]


def test_frozen_subagents_do_not_change_while_the_orchestrator_learns(ray_session):
    from envs.swarm import SwarmEnv
    from policies.model import build_policy
    from rl.learner import Learner
    from rl.rollout_choice import choose_rollout
    from rollout.engines.base import SamplingParams
    from rollout.swarm.stage import run_stage
    from rollout.swarm.subagent import SubagentSpec
    from rollout.transcript import line_params
    from rollout.worker import push_weights, spawn_workers

    cfg = validate_config(
        {
            "policy": POLICY,
            "env": {"name": "swarm", "levels": [2]},
            "rollout": {"max_new_tokens": 12},
            "parl": {"max_stages": 3, "max_total_tokens": 128, "max_subagent_tokens": 64},
            "optimizer": {"name": "adamw", "adamw_lr": 1e-2},
        }
    )
    model, tok = build_policy(cfg.policy, seed=0)
    workers = spawn_workers(2, cfg.policy, engine="hf", batch_size=64, cpus=1, gpus=0, torch_threads=1)
    import ray

    try:
        push_weights(workers, model.state_dict(), version=0)
        env = SwarmEnv(levels=(2,))
        rollout = choose_rollout(cfg, env, workers, model, None)  # no checkpoint: sub-agents get the step-0 weights
        checksum = lambda role: ray.get([w.param_checksum.remote(role) for w in workers])  # noqa: E731
        specs = [SubagentSpec("a", "age", n, 0) for n in env.train_names[:3]]
        greedy = line_params(tok, SamplingParams(max_new_tokens=8, temperature=0.0))
        env_spec = {"name": "swarm", "kwargs": {"levels": [2]}}
        before_subs = run_stage(workers, specs, greedy, rollout.run.budgets, env_spec, seed=5)
        policy0, frozen0 = checksum("policy"), checksum("subagent")
        assert policy0 == frozen0  # same start

        learner = Learner.from_config(model, cfg)
        for step in (1, 2):
            episodes = rollout.run(workers, env.sample(2, np.random.default_rng(step)), tok, SamplingParams(max_new_tokens=12), group_size=2, seed=step, step=step)
            for e in episodes:  # orchestrator turns are trainable, everything else is not
                assert all(t.trainable == (t.role == "assistant") for t in e.turns)
                assert all(not t.trainable for s in e.sub_episodes for t in s.turns)
                assert len(e.prompt_ids) + sum(len(t.token_ids) for t in e.turns) <= 128
            batch = build_batch(episodes, [1.0, -1.0] * 2, tok.pad_token_id)
            assert batch.num_tokens == sum(len(t.token_ids) for e in episodes for t in e.turns if t.role == "assistant")
            learner.update(batch)
            push_weights(workers, model.state_dict(), version=step)
            policy, frozen = checksum("policy"), checksum("subagent")
            assert all(abs(p - q) > 1e-3 for p, q in zip(policy, policy0)), "the orchestrator's weights did not move"
            assert frozen == frozen0, "a weight push reached the frozen sub-agents"
            policy0 = policy
        after_subs = run_stage(workers, specs, greedy, rollout.run.budgets, env_spec, seed=5)
        assert [[t.token_ids for t in s.turns] for s in after_subs] == [[t.token_ids for t in s.turns] for s in before_subs]
    finally:
        for w in workers:
            ray.kill(w, no_restart=True)


PARL_YAML = """
run: {{name: parl, seed: 1, runs_dir: {runs}, torch_threads: 1}}
cluster: {{num_cpus: 2}}
policy: {{hidden_size: 64, num_layers: 2, num_heads: 2, head_dim: 32, intermediate_size: 128, max_position_embeddings: 160}}
sft: {{examples: 64, batch_size: 16, max_steps: 4, lr: 3.0e-3}}
env: {{name: swarm, levels: [2], eval_size: 4}}
rollout: {{num_workers: 2, group_size: 2, max_new_tokens: 16}}
parl: {{max_stages: 3, max_subagents_per_stage: 4, max_subagent_steps: 2, max_total_tokens: 128, max_subagent_tokens: 64}}
rewards:
  outcome: {{weight: 1.0, params: {{partial_credit: true}}}}
  instantiation: {{weight: 0.4}}
  finish: {{weight: 0.4}}
algorithm: {{dynamic_sampling: false}}
optimizer: {{name: adamw, adamw_lr: 1.0e-3}}
train: {{steps: 2, tasks_per_step: 2, eval_every: 0}}
tracking: {{progress: false}}
checkpoint: {{every: 0}}
"""


def test_parl_sweep_trains_end_to_end_and_compare_shows_the_parl_columns(tmp_path, ray_session, capsys):
    """Two 2-step runs that differ only in λ1/λ2 (annealed, off), as `swarmrl sweep` runs them;
    the annealed one is checked as a PARL run, then `compare` on both."""
    from PIL import Image

    from rl.compare import compare

    sweep_dir = tmp_path / "lam"
    sweep_dir.mkdir()
    base = PARL_YAML.format(runs=tmp_path / "runs")
    (sweep_dir / "annealed.yaml").write_text(base)
    off = "  instantiation: {weight: {kind: constant, value: 0.0}}\n  finish: {weight: {kind: constant, value: 0.0}}"
    (sweep_dir / "off.yaml").write_text(base.replace("  instantiation: {weight: 0.4}\n  finish: {weight: 0.4}", off))
    assert main(["sweep", str(sweep_dir)]) == 0
    out = capsys.readouterr().out
    assert "the files differ in rewards.finish.weight, rewards.instantiation.weight" in out and "note:" not in out
    (run_dir,) = (tmp_path / "runs").glob("lam-*/annealed")

    rows = pq.read_table(run_dir / "episodes" / "step_000002.parquet").to_pylist()
    assert len(rows) == 4
    for r in rows:
        turns = json.loads(r["turns"])
        assert turns and turns[0]["role"] == "assistant" and turns[0]["stage"] == 0
        assert all(t["trainable"] == (t["role"] == "assistant") for t in turns)
        assert set(json.loads(r["reward_components"])) == {"outcome", "instantiation", "finish"}
        for sub in json.loads(r["sub_episodes"]):
            assert sub["prompt"].count(" ") == 1 and 0 <= sub["stage"] < 3

    client = MlflowClient(default_uri(tmp_path / "runs"))
    run_id = (run_dir / "mlflow_run_id").read_text().strip()
    hist = lambda key: {m.step: m.value for m in client.get_metric_history(run_id, key)}  # noqa: E731
    # λ1, λ2 anneal linearly to 0 over train.steps, per step in MLflow, next to each component
    assert hist("weight/instantiation") == {1: pytest.approx(0.2), 2: 0.0}
    assert hist("weight/finish") == {1: pytest.approx(0.2), 2: 0.0}
    assert hist("weight/outcome") == {1: 1.0, 2: 1.0}
    for key in ("reward/outcome", "reward/instantiation", "reward/finish", "parl/critical_steps", "parl/total_steps", "parl/subagents"):
        assert sorted(hist(key)) == [1, 2], key
    for step, crit in hist("parl/critical_steps").items():
        assert 1 <= crit <= hist("parl/total_steps")[step]
    assert sorted(hist("eval/score")) == [0, 2] and sorted(hist("eval/parl/critical_steps")) == [0, 2]

    png = tmp_path / "cmp.png"
    assert main(["compare", "lam", "--runs-dir", str(tmp_path / "runs"), "--out", str(png)]) == 0
    table = capsys.readouterr().out
    header = table.splitlines()[0].split()
    for col in ("item", "F1", "critical", "total", "sub-agents/ep", "own", "tools/ep", "r.outcome", "r.instantiation", "r.finish"):
        assert col in header, col
    assert "pass@1 best" not in table  # the math columns give way to the PARL ones
    panels = Image.open(png).text["Description"]
    for key in ("eval/score", "parl/critical_steps", "parl/subagents", "parl/own_tool_calls", "reward/instantiation", "weight/instantiation", "weight/finish"):
        assert key in panels, key

    # the figures are the runs' own: held-out at the last evaluation, components over the last steps
    rows, _ = compare(default_uri(tmp_path / "runs"), "lam", tmp_path / "again.png")
    assert [r["run"] for r in rows] == ["annealed", "off"]
    for r in rows:
        m = client.get_run(r["run_id"]).data.metrics
        assert r["critical"] == m["eval/parl/critical_steps"] and r["sub-agents/ep"] == m["eval/parl/subagents"]
        assert r["item F1"] == m["eval/score"] and 1 <= r["critical"] <= r["total"]
        inst = [x.value for x in sorted(client.get_metric_history(r["run_id"], "reward/instantiation"), key=lambda x: x.step)]
        assert r["components"]["instantiation"] == pytest.approx(sum(inst) / len(inst))  # 2 steps: both in the tail
    weights = {r["run"]: [x.value for x in client.get_metric_history(r["run_id"], "weight/instantiation")] for r in rows}
    assert sorted(weights["off"]) == [0.0, 0.0] and sorted(weights["annealed"]) == [0.0, pytest.approx(0.2)]


def test_parl_budget_keys_are_checked_against_the_context(tmp_path):
    from rl.config import ConfigError, load_config

    exp = tmp_path / "parl.yaml"
    exp.write_text(PARL_YAML.format(runs=tmp_path / "runs"))
    with pytest.raises(ConfigError, match="parl.max_total_tokens"):
        load_config(exp, ["parl.max_total_tokens=400"])
    with pytest.raises(ConfigError, match="max_new_tokens"):
        load_config(exp, ["rollout.max_new_tokens=64"])
    with pytest.raises(ConfigError, match="parl.max_stages"):
        load_config(exp, ["parl.max_stages=0"])
    with pytest.raises(ConfigError, match="Did you mean 'parl.max_stages'"):
        load_config(exp, ["parl.max_stage=3"])
