"""Rollout workers: Ray actors that hold a copy of the policy and sample completions.

The driver puts the learner's weights in the object store once per step (`ray.put`) and hands
the same reference to every worker; each worker loads it into its engine.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import ray
import torch

from policies.spec import PolicyConfig
from rollout.engines.base import Completion, SamplingParams
from rollout.recovery import WorkerGroup, call_everywhere, load_everywhere, run_shards


def assigned_device() -> str:
    """`cuda` when Ray gave this actor a GPU (Ray points its CUDA_VISIBLE_DEVICES there), else `cpu`."""
    return "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"


class RolloutWorker:
    """A generation engine behind a Ray actor. Plain class: wrapped with `ray.remote` in `spawn_workers`."""

    def __init__(self, policy: PolicyConfig, engine: str, batch_size: int, torch_threads: int, engine_options: dict[str, Any] | None = None):
        """`policy`: the policy the driver built (`policies.model.build_policy`); a folder in
        `policy.path` (e.g. the SFT checkpoint) must be readable where this actor runs."""
        if torch_threads > 0:
            torch.set_num_threads(torch_threads)
        from policies.model import build_policy
        from policies.vlm import processor_for

        model, tokenizer = build_policy(policy)
        if engine == "vllm":
            from rollout.engines.vllm import VLLMEngine

            options = {"max_model_len": policy.max_position_embeddings, **(engine_options or {})}  # the YAML's rollout.max_model_len wins
            self.engine = VLLMEngine.from_model(model, tokenizer, **options)
        elif engine == "hf":
            from rollout.engines.hf import HFEngine

            images = _image_inputs(processor_for(policy, tokenizer), model)
            model = model.to(assigned_device())  # the engine generates where its model is
            self.engine = HFEngine(model, tokenizer.eos_token_id, tokenizer.pad_token_id, batch_size, image_inputs=images)
        else:
            raise ValueError(f"unknown engine {engine!r}")
        self.version = -1
        self.tokenizer = tokenizer
        self.subagent_engine = None  # PARL: the frozen sub-agent policy, never touched by load_weights
        self._envs: dict[str, Any] = {}

    def load_weights(self, state: dict[str, torch.Tensor], version: int) -> int:
        self.engine.load_weights(state)
        self.version = version
        return os.getpid()

    def set_version(self, version: int) -> None:
        """The weights version after a transfer that bypasses `load_weights` (NCCL)."""
        self.version = version

    def weight_sync_rpc(self, method: str, payload: Any = None) -> None:
        """vLLM's weight-transfer control plane (NCCL on GPU, `rollout.engines.vllm_nccl`); engine `vllm` only."""
        self.engine.weight_sync_rpc(method, payload)

    def sleep(self) -> None:
        """Free the engine's GPU memory while the learner trains (`rollout.colocate`); the PARL
        sub-agent engine (hf, frozen) is left as it is."""
        self.engine.sleep()

    def wake_up(self, tags: list[str] | None = None) -> None:
        self.engine.wake_up(tags)

    def generate(self, prompts: list, params: SamplingParams, seed: int) -> tuple[int, list[Completion]]:
        return self.version, self.engine.generate(prompts, params, seed)

    def pid(self) -> int:
        return os.getpid()

    def node_id(self) -> str:
        """The Ray node this actor runs on (placement checks)."""
        return ray.get_runtime_context().get_node_id()

    def load_subagent_policy(self, path: str | None, state: dict[str, torch.Tensor] | None) -> int:
        """PARL: the frozen sub-agent policy, from a model folder or (same architecture) a state dict."""
        import copy

        from policies.model import load_model
        from rollout.engines.hf import HFEngine

        model = load_model(path) if path else copy.deepcopy(self.engine.model)
        if state is not None:
            model.load_state_dict(state, strict=True)
        model = model.to(assigned_device())
        self.subagent_engine = HFEngine(model, self.engine.eos_token_id, self.engine.pad_token_id, self.engine.batch_size)
        return os.getpid()

    def run_subagents(self, specs: list, params: SamplingParams, budgets, env_spec: dict[str, Any], seed: int) -> tuple[int, list]:
        """PARL: run sub-agents to completion with the frozen policy and the env's tools
        (`rollout.swarm.subagent`). Returns (weights version, sub-episodes) like `generate`: a
        restarted actor has lost its sub-agent policy and answers -1, so the driver reloads it."""
        if self.subagent_engine is None:  # restarted (or never given one): the driver's stage check says so
            return -1, []
        from rollout.swarm.subagent import run_subagents

        return self.version, run_subagents(self.subagent_engine, self.tokenizer, self._env(env_spec).call_tool, specs, params, budgets, seed)

    def param_checksum(self, role: str = "policy") -> float:
        """Σ|θ| of the `policy` (trained) or `subagent` (frozen) engine: a cheap check that weights moved or did not."""
        engine = self.engine if role == "policy" else self.subagent_engine
        return float(sum(p.detach().double().abs().sum() for p in engine.model.parameters()))

    def _env(self, spec: dict[str, Any]):
        key = repr(sorted(spec.items()))
        if key not in self._envs:
            from envs.registry import make_env

            self._envs[key] = make_env(spec["name"], **spec.get("kwargs", {}))
        return self._envs[key]


def _image_inputs(processor, model):
    """The engine's image handling for a VLM (None for a text-only policy)."""
    if processor is None:
        return None
    from policies.vlm import tokens_per_image
    from rollout.engines.multimodal import ImageInputs

    return ImageInputs(processor.image_processor, model.config.image_token_id, tokens_per_image(model.config))


def spawn_workers(
    n: int,
    policy: PolicyConfig,
    *,
    engine: str,
    batch_size: int,
    cpus: float,
    gpus: float,
    torch_threads: int,
    engine_options: dict[str, Any] | None = None,
    scheduling: list | None = None,
) -> WorkerGroup:
    """`scheduling`: one Ray scheduling strategy per worker (e.g. its placement-group bundle), or None."""
    threads = torch_threads or max(1, int(cpus))
    # No task retries by Ray: a restarted actor holds the initial weights; `rollout.recovery` retries instead.
    actor = ray.remote(num_cpus=cpus, num_gpus=gpus, max_restarts=3, max_task_retries=0)(RolloutWorker)
    strategies = scheduling or [None] * n
    workers = [actor.options(scheduling_strategy=s).remote(policy, engine, batch_size, threads, engine_options) for s in strategies]
    ray.get([w.pid.remote() for w in workers])  # surface construction errors now, not mid-step
    return WorkerGroup(workers)


def push_weights(workers: list, state: dict[str, torch.Tensor], version: int) -> None:
    """One `ray.put` per step; every worker reads the same object."""
    ref = ray.put({k: v.detach().cpu() for k, v in state.items()})
    load_everywhere(workers, ref, version)


class WorkerEngines:
    """The engines of all rollout workers, put to sleep and woken together (`rollout.colocate`).

    A worker that dies meanwhile restarts awake with the current weights loaded (`rollout.recovery`)
    and gets the same call again: sleep frees it, wake-up finds nothing asleep.
    """

    def __init__(self, workers: list):
        self.workers = workers

    def sleep(self) -> None:
        call_everywhere(self.workers, lambda w: w.sleep.remote())

    def wake_up(self, tags: Sequence[str] | None = None) -> None:
        wanted = None if tags is None else list(tags)
        call_everywhere(self.workers, lambda w: w.wake_up.remote(wanted))


def load_subagent_policy(workers: list, path: str | None, state: dict[str, torch.Tensor] | None = None) -> None:
    """PARL: give every worker the frozen sub-agent policy (a folder, or a state dict put once)."""
    ref = ray.put({k: v.detach().cpu() for k, v in state.items()}) if state is not None else None
    if isinstance(workers, WorkerGroup):
        workers.subagent = (path, ref)
    ray.get([w.load_subagent_policy.remote(path, ref) for w in workers])


def generate(workers: list, prompts: list, params: SamplingParams, seed: int) -> list[Completion]:
    """Split `prompts` into contiguous shards, one per worker, and concatenate the results in order.

    Each shard's sampling seed depends only on (`seed`, shard index), so results do not depend
    on which worker process served which shard, nor on a shard being retried after its worker
    died (`rollout.recovery`).
    """
    n = len(workers)
    bounds = [round(i * len(prompts) / n) for i in range(n + 1)]

    def shard(i: int):
        return lambda w: w.generate.remote(prompts[bounds[i] : bounds[i + 1]], params, seed * 1000 + i)

    out: list[Completion] = []
    for version, completions in run_shards(workers, [(i, shard(i)) for i in range(n) if bounds[i + 1] > bounds[i]]):
        for c in completions:
            c.policy_version = version
        out.extend(completions)
    return out
