"""N learner ranks (`cluster.learner_ranks`): Ray actors in one gloo process group, the policy
sharded with FSDP2, take the update one process takes on the same batches; their checkpoints
resume at any number of ranks; a dead rank fails the step with its rank named."""

from __future__ import annotations

import copy
import importlib.util
import time

import pytest
import torch

from policies.model import build_policy
from rl.config import ConfigError, load_config
from rl.distributed.ranks import split_rows_by_tokens
from rl.learner import Learner
from tests.test_microbatch import _grouped_batch

RAY_CPUS = 2

COMMON = [
    "sft.enabled=false",
    "rollout.max_new_tokens=12",
    "cluster.learner_ranks=2",
    "cluster.learner_timeout_s=20",
    "run.torch_threads=1",
    "algorithm.minibatch_size=8",  # two optimizer steps per update
    "learner.max_tokens_per_microbatch=40",  # ranks run different numbers of micro-batches
    "algorithm.entropy_coef=0.01",
]


def _cfg(*overrides: str):
    return load_config("experiments/quickstart.yaml", [*COMMON, *overrides])


def test_rows_are_split_by_tokens_longest_first():
    lengths = [9, 1, 5, 5, 3, 7]
    parts = split_rows_by_tokens(lengths, 2)
    assert sorted(torch.cat(parts).tolist()) == list(range(6))
    loads = [sum(lengths[i] for i in p.tolist()) for p in parts]
    assert loads == [15, 15]
    assert all(p.tolist() == sorted(p.tolist()) for p in parts)
    # fewer rows than ranks: the last rank has none, and must still run its passes
    assert [p.tolist() for p in split_rows_by_tokens([4], 2)] == [[0], []]


def _flat_state(learner_state: dict) -> dict[str, torch.Tensor]:
    return {k: v.detach().float() for k, v in learner_state.items()}


def _driver_updates(cfg, model, batches):
    learner = Learner.from_config(copy.deepcopy(model), cfg)
    metrics = [learner.update(b) for b in batches]
    return learner, metrics


def _close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float) -> None:
    assert a.keys() == b.keys() and a
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0, msg=k)


@pytest.mark.slow
@pytest.mark.parametrize(
    "optimizer, atol, extra",
    [
        # fp32 Newton-Schulz; tau at the random init's max logits (about 0.2-0.25): some heads clip, some not
        ("muonclip", 1e-4, ["optimizer.qk_clip_tau=0.21"]),
        ("adamw", 1e-5, ["algorithm.kl_coef=0.05", "algorithm.tis_cap=2.0"]),
    ],
)
def test_two_ranks_update_checkpoint_and_resume_like_one_process(tmp_path, ray_session, optimizer, atol, extra):
    from rl.learner_group import LearnerGroup

    cfg = _cfg(f"optimizer.name={optimizer}", *extra)
    model, tok = build_policy(cfg.policy, seed=3)
    batches = [_grouped_batch(tok, prompts=4, group=4, seed=20 + i) for i in range(4)]
    one, one_metrics = _driver_updates(cfg.model_copy(update={"cluster": cfg.cluster.model_copy(update={"learner_ranks": 1})}), model, batches[:3])

    group = LearnerGroup(copy.deepcopy(model), cfg)
    try:
        assert len(set(group.nodes())) == 1  # one machine: both ranks on the local node
        group_metrics = [group.update(b) for b in batches[:3]]
        _close(_flat_state(group.served.state_dict()), _flat_state(one.served.state_dict()), atol)
        for mine, theirs in zip(group_metrics, one_metrics):
            assert mine.keys() == theirs.keys()
            for key in ("learner/loss", "learner/pg_loss", "learner/clip_frac", "learner/entropy", "learner/grad_norm", "learner/sampler_kl", "learner/sampler_logprob_max_abs_diff"):
                assert mine[key] == pytest.approx(theirs[key], abs=1e-4), key
            assert mine["learner/qk_clipped_heads"] == theirs["learner/qk_clipped_heads"]
        if optimizer == "muonclip":
            assert sum(m["learner/qk_clipped_heads"] for m in one_metrics) > 0, "no head was clipped: the test proves nothing about QK-Clip"
            if importlib.util.find_spec("vllm") is not None:
                # the NCCL push's source: vLLM iterates the sharded model on every rank (each
                # parameter a gather of the ranks' process group); rank 0 ends with the whole weights
                import ray

                def _stream_like_the_nccl_push(rank_actor) -> dict[str, torch.Tensor]:
                    """(in the actor; a local function travels by value) as `NCCLWeightSync` streams the weights"""
                    from vllm.distributed.weight_transfer.base import ModuleSource

                    return {name: tensor.detach().clone() for name, tensor in ModuleSource(rank_actor.learner.model)}

                streamed = ray.get([a.__ray_call__.remote(_stream_like_the_nccl_push) for a in group.actors])
                _close(streamed[0], _flat_state(dict(one.model.named_parameters())), atol)

        # sharded checkpoint after 3 updates; the 4th update from it equals the straight run's
        ckpt = tmp_path / "ckpt"
        ckpt.mkdir()
        group.save_train_state(ckpt)
        assert (ckpt / "model.pt").is_file() and (ckpt / "train_state").is_dir()
        group.update(batches[3])
        straight = _flat_state(group.served.state_dict())
        group.load_train_state(ckpt)
        group.update(batches[3])
        _close(_flat_state(group.served.state_dict()), straight, 0.0)  # same N: exact

        # 2 ranks -> 1 process: the sharded checkpoint loads into the driver's learner
        single = Learner.from_config(copy.deepcopy(model), cfg.model_copy(update={"cluster": cfg.cluster.model_copy(update={"learner_ranks": 1})}))
        single.load_train_state(ckpt)
        single.update(batches[3])
        _close(_flat_state(single.served.state_dict()), straight, atol)

        # 1 process -> 2 ranks: the single-file checkpoint (model.pt + optimizer.pt) loads into the ranks
        legacy = tmp_path / "legacy"
        legacy.mkdir()
        torch.save(one.model.state_dict(), legacy / "model.pt")
        torch.save(one.optimizer.state_dict(), legacy / "optimizer.pt")
        group.load_train_state(legacy)
        one.update(batches[3])
        group.update(batches[3])
        _close(_flat_state(group.served.state_dict()), _flat_state(one.served.state_dict()), atol)

        if optimizer == "adamw":
            # a rank dies: the next step fails at once, naming it, instead of hanging
            import ray

            ray.kill(group.actors[1], no_restart=True)
            t0 = time.perf_counter()
            with pytest.raises(RuntimeError, match=r"learner rank 1 of 2 failed in update.*--resume"):
                group.update(batches[0])
            assert time.perf_counter() - t0 < cfg.cluster.learner_timeout_s + 10
    finally:
        group.close()


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["cluster.learner_ranks=2", "learner.actor=false"], "learner.actor"),
        (["cluster.learner_ranks=2", "policy.lora.r=4"], "policy.lora"),
        (["cluster.learner_ranks=2", "cluster.learner_gpus=0.5"], "cluster.learner_gpus"),
    ],
)
def test_impossible_rank_settings_name_the_key(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config("experiments/quickstart.yaml", overrides)


def test_ranks_run_in_actors_and_get_one_bundle_each():
    from rl.placement import driver_bundle, rank_bundles

    cfg = load_config("experiments/quickstart.yaml", ["cluster.learner_ranks=3", "cluster.learner_cpus=1"])
    assert cfg.learner_in_actor
    assert driver_bundle(cfg) is not None and rank_bundles(cfg) == [{"CPU": 1.0}, {"CPU": 1.0}]


TINY = """
run: {{name: ranks, seed: 5, runs_dir: {runs}, torch_threads: 1}}
cluster: {{num_cpus: 2, learner_ranks: 2, learner_timeout_s: 30}}
policy: {{hidden_size: 64, num_layers: 2, num_heads: 2, head_dim: 32, intermediate_size: 128, max_position_embeddings: 32}}
sft: {{enabled: false}}
env: {{name: math, levels: [1], eval_size: 8}}
rollout: {{group_size: 4, max_new_tokens: 4}}
algorithm: {{dynamic_sampling: false}}
train: {{steps: 4, tasks_per_step: 4, eval_every: 0}}
tracking: {{progress: false}}
checkpoint: {{every: 1}}
"""


def _rank_pids(rank_title: bytes = b"ray::LearnerRank") -> list[int]:
    """Live learner-rank actor processes of this test's Ray instance (children of a raylet that
    is a child of this process, never another user's actors)."""
    import os

    def parent(pid: int) -> int:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])

    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if f.read().startswith(rank_title) and parent(parent(int(entry))) == os.getpid():
                    found.append(int(entry))
        except (OSError, ValueError):
            continue
    return found


@pytest.mark.slow
def test_a_killed_rank_fails_the_run_and_resume_loses_no_step(tmp_path, ray_session, capsys):
    """`swarmrl train` with two learner ranks; one rank SIGKILLed after step 2: the run stops with
    an error naming the rank (no hang), `--resume` finishes it from the last checkpoint, and MLflow
    holds each step once."""
    import os
    import signal
    import threading

    from mlflow.tracking import MlflowClient

    from rl.cli import main
    from rl.tracking import default_uri

    exp = tmp_path / "ranks.yaml"
    exp.write_text(TINY.format(runs=tmp_path / "runs"))
    run_dir = tmp_path / "runs" / "ranks"
    result: dict = {}

    def train() -> None:
        try:
            result["rc"] = main(["train", str(exp), "--run-dir", str(run_dir)])
        except Exception as err:  # the CLI may raise or return non-zero: both are a failed run
            result["error"] = err

    thread = threading.Thread(target=train)
    thread.start()
    deadline = time.monotonic() + 240
    while not (run_dir / "checkpoints" / "step_000002").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    pids = _rank_pids()
    assert len(pids) == 2 and thread.is_alive(), result
    os.kill(pids[1], signal.SIGKILL)
    t0 = time.monotonic()
    thread.join(timeout=120)
    assert not thread.is_alive(), "the run hung after a learner rank died"
    assert time.monotonic() - t0 < 60
    failed = result.get("error") is not None or result.get("rc") not in (0, None)
    assert failed, "the run finished although a learner rank died"
    said = str(result.get("error", "")) + "".join(capsys.readouterr())
    assert "learner rank" in said and "--resume" in said

    assert main(["train", "--resume", str(run_dir)]) == 0
    client = MlflowClient(default_uri(tmp_path / "runs"))
    run_id = (run_dir / "mlflow_run_id").read_text().strip()
    steps = sorted(m.step for m in client.get_metric_history(run_id, "time/step_s"))
    assert steps == [1, 2, 3, 4]
    assert (run_dir / "checkpoints" / "step_000004" / "train_state").is_dir()
    nodes = client.get_run(run_id).data.tags["swarmrl.learner_nodes"].split(",")
    assert len(nodes) == 2

    # the export reads the whole weights rank 0 gathered into the checkpoint
    from safetensors.torch import load_file

    assert main(["export", str(run_dir), str(tmp_path / "hf")]) == 0
    exported = load_file(tmp_path / "hf" / "model.safetensors")
    trained = torch.load(run_dir / "checkpoints" / "step_000004" / "model.pt", weights_only=True)
    assert exported and all(torch.equal(exported[k], trained[k]) for k in exported)
