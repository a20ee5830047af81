"""Everything a run holds between steps, how it is set up, and how it is torn down.

`open_run(cfg, run_dir, resume=...)` is a context manager around the loop of `rl.trainer`:

    setup     the env, the SFT bootstrap, the policy (+ LoRA), Ray and the rollout workers, the
              learner (in the driver or in an actor that owns its GPU, `rl.learner_host`), the
              resumed checkpoint, MLflow, the rollout pipeline, the step-0 evaluation
    teardown  the pipeline closed, workers and learner actor stopped, MLflow closed (FAILED on
              an exception), `summary.json` written on success

and `RunState` gives the loop its parts and the run-level actions: `evaluate(step)`,
`checkpoint(step)`, `progress(step)`, `out_of_time()`.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from rl.checkpoint import latest_checkpoint, load_average, load_checkpoint, save_checkpoint, save_policy_skeleton
from rl.config import ExperimentConfig, PolicyConfig, to_yaml
from rl.console import Console
from rl.evaluate import evaluate
from rl.experiment_env import experiment_env
from rl.learner_host import start_learner
from rl.optim.schedule import run_progress
from rl.placement import place_roles, worker_nodes
from rl.policy_average import AVERAGE_VERSION, PolicyAverage
from rl.rollout_choice import Rollout, choose_rollout
from rl.rollout_pipeline import RolloutPipeline
from rl.sample_grid import log_sample_grid
from rl.self_judgement import log_reliability_diagram, stated_and_graded
from rl.sft import run_sft
from rl.tracking import Tracker, default_uri
from rollout.engines.base import SamplingParams
from rollout.colocate import colocated_update, release_learner_cache
from rollout.engines.vllm_options import vllm_engine_options
from rollout.weight_sync import choose_weight_sync
from rollout.worker import WorkerEngines, push_weights, spawn_workers


@dataclass
class RunState:
    cfg: ExperimentConfig
    run_dir: Path
    console: Console
    env: Any
    tokenizer: Any
    processor: Any  # a VLM's processor; None for a text-only policy
    learner: Any  # `rl.learner.Learner` or `rl.learner_host.RemoteLearner`
    average: PolicyAverage | None  # `train.eval_ema`
    workers: Any  # rollout worker group
    tracker: Tracker
    rollout: Rollout
    pipeline: RolloutPipeline
    eval_tasks: list
    eval_params: SamplingParams
    weight_sync: str  # how weights reach the workers: `rollout.weight_sync` resolved (`rollout.weight_sync`)
    start_step: int
    rl_t0: float  # perf_counter at the start of RL, less the RL time a resumed run already spent
    last_eval: dict[str, float] = field(default_factory=dict)

    @property
    def image_processor(self) -> Any:
        return getattr(self.processor, "image_processor", None)

    def rl_seconds(self) -> float:
        return time.perf_counter() - self.rl_t0

    def progress(self, step: int) -> float:
        """How far the run is (for the LR schedule): the larger of the steps done and the time cap spent."""
        return run_progress(step - 1, self.cfg.train.steps, self.rl_seconds(), self.cfg.train.max_minutes)

    def out_of_time(self) -> bool:
        return self.cfg.train.max_minutes is not None and self.rl_seconds() > 60 * self.cfg.train.max_minutes

    def push_weights(self, version: int) -> None:
        """The learner's weights to every rollout worker (`rollout.weight_sync`)."""
        if self.weight_sync == "nccl":  # from the learner actor's GPU straight into the engines'
            self.learner.broadcast_weights(self.workers, version, self.cfg.rollout.tensor_parallel_size)
        else:
            push_weights(self.workers, self.learner.served.state_dict(), version=version)

    def update_then_push(self, step: int, update: Callable[[], dict[str, float]]) -> dict[str, float]:
        """`update()`, then the new weights to the workers; with `rollout.sleep_mode` the engines
        sleep through the update and wake for the weights (`rollout.colocate`)."""
        if not self.cfg.rollout.sleep_mode:
            metrics = update()
            self.push_weights(step)
            return metrics
        release = getattr(self.learner, "release_memory", release_learner_cache)
        return colocated_update(WorkerEngines(self.workers), update, hand_over=lambda: self.push_weights(step), release=release)

    def evaluate(self, step: int) -> dict[str, float]:
        """Held-out pass@1 of the current policy (of the weight average with `train.eval_ema`), logged samples."""
        cfg = self.cfg
        if self.average is not None:  # the workers serve the average for the evaluation only
            self.pipeline.settle()
            push_weights(self.workers, self.average.state_dict(), version=AVERAGE_VERSION)
        # The eval seed is fixed so that successive evaluations differ only by the policy.
        metrics, episodes = evaluate(
            self.workers,
            self.env,
            self.eval_tasks,
            self.tokenizer,
            self.eval_params,
            seed=cfg.run.seed + 7_777_777,
            verify_workers=cfg.sandbox.workers,
            rollout=self.rollout,
            samples=cfg.train.eval_samples,
        )
        if self.average is not None:
            self.push_weights(step)
        if cfg.tracking.sample_episodes and step > self.tracker.logged_until:
            first = episodes[:: cfg.train.eval_samples]  # one per task, as many tasks as possible
            sample = [e.json_record() for e in first[: cfg.tracking.sample_episodes]]
            self.tracker.log_dict(sample, f"episodes/eval_step_{step:06d}.json")
            log_sample_grid(self.tracker, self.run_dir, self.eval_tasks, first, step)
        if step > self.tracker.logged_until:
            log_reliability_diagram(self.tracker, self.run_dir, *stated_and_graded(episodes), step)
        per_task = f" x {cfg.train.eval_samples} samples" if cfg.train.eval_samples > 1 else ""
        self.console.log(f"step {step}: held-out pass@1 {metrics['eval/pass_at_1']:.3f} on {len(self.eval_tasks)} problems{per_task}")
        self.last_eval = metrics
        return metrics

    def checkpoint(self, step: int) -> None:
        save_checkpoint(
            self.run_dir, step, self.learner.model, getattr(self.learner, "optimizer", None),
            {"mlflow_run_id": self.tracker.run_id, "rl_wall_s": self.rl_seconds()},
            keep=self.cfg.checkpoint.keep,
            average=self.average.state_dict() if self.average is not None else None,
            write_train_state=getattr(self.learner, "save_train_state", None),  # learner ranks write their own shards
        )


@contextmanager
def open_run(cfg: ExperimentConfig, run_dir: Path, *, resume: bool = False) -> Iterator[RunState]:
    console = Console(enabled=cfg.tracking.progress)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(to_yaml(cfg))
    if cfg.run.torch_threads:
        torch.set_num_threads(cfg.run.torch_threads)
    torch.manual_seed(cfg.run.seed)

    env = experiment_env(cfg)
    policy_cfg = cfg.policy
    if cfg.sft.enabled:
        policy_cfg = cfg.policy.model_copy(update={"path": str(run_sft(cfg, env, log=console.log))})

    from policies.lora import apply_lora, save_lora_settings
    from policies.model import build_policy
    from policies.vlm import processor_for

    model, tokenizer = build_policy(policy_cfg, seed=cfg.run.seed)
    if policy_cfg.lora is not None:
        apply_lora(model, policy_cfg.lora, seed=cfg.run.seed)
    processor = processor_for(policy_cfg, tokenizer)  # None for a text-only policy
    skeleton = save_policy_skeleton(model, tokenizer, processor, run_dir)  # what `swarmrl export` / `eval` rebuild a checkpoint on
    if policy_cfg.lora is not None:
        save_lora_settings(policy_cfg.lora, skeleton)  # how export merges a checkpoint's adapters

    workers = start_ray_and_workers(cfg, policy_cfg, console)
    learner = tracker = pipeline = None
    try:
        learner = start_learner(model, cfg, workers.placement_group)
        del model  # the learner's copy is the policy now (in an actor, this one would go stale)
        start_step, rl_wall_before = 0, 0.0
        ckpt = latest_checkpoint(run_dir) if resume else None
        if ckpt is not None:
            restored = load_checkpoint(ckpt, learner)
            start_step, rl_wall_before = restored["step"], float(restored["extra"].get("rl_wall_s", 0.0))
            console.log(f"resumed from {ckpt} (step {start_step})")
        average = PolicyAverage(learner.served, cfg.train.eval_ema) if cfg.train.eval_ema is not None else None
        if average is not None and ckpt is not None and (saved := load_average(ckpt)) is not None:
            average.load_state_dict(saved)
        tracker = Tracker(
            cfg.tracking.uri or default_uri(cfg.run.runs_dir),
            cfg.tracking.experiment,
            run_dir,
            cfg.run.name,
            cfg.model_dump(mode="json"),
            artifact_root=Path(cfg.run.runs_dir),
            tags=cfg.run.tags,
        )
        if start_step == 0:
            tracker.log_artifact(run_dir / "config.yaml")
        tracker.set_tag("swarmrl.worker_nodes", ",".join(worker_nodes(workers)))
        if hasattr(learner, "nodes"):  # learner ranks: where each one runs
            tracker.set_tag("swarmrl.learner_nodes", ",".join(learner.nodes()))
        push_weights(workers, learner.served.state_dict(), version=start_step)
        rollout = choose_rollout(cfg, env, workers, learner.served, policy_cfg.path, processor)
        r = cfg.rollout
        params = SamplingParams(max_new_tokens=r.max_new_tokens, temperature=r.temperature, top_p=r.top_p)
        pipeline = RolloutPipeline(
            env, rollout, workers, tokenizer, params,
            tasks_per_step=cfg.train.tasks_per_step, group_size=r.group_size, level_weights=cfg.env.level_weights,
            seed=cfg.run.seed, max_staleness=r.max_staleness, last_step=cfg.train.steps,
        )
        eval_temperature = r.temperature if cfg.train.eval_temperature is None else cfg.train.eval_temperature
        run = RunState(
            cfg=cfg,
            run_dir=run_dir,
            console=console,
            env=env,
            tokenizer=tokenizer,
            processor=processor,
            learner=learner,
            average=average,
            workers=workers,
            tracker=tracker,
            rollout=rollout,
            pipeline=pipeline,
            eval_tasks=env.eval_tasks(cfg.env.eval_size),
            eval_params=SamplingParams(max_new_tokens=r.max_new_tokens, temperature=eval_temperature, top_p=r.top_p),
            weight_sync=choose_weight_sync(cfg.rollout, cfg.cluster.learner_gpus),
            start_step=start_step,
            rl_t0=0.0,
        )
        if start_step == 0:
            tracker.log_metrics(run.evaluate(0), 0)
        run.rl_t0 = time.perf_counter() - rl_wall_before  # a resumed run keeps its time budget and LR schedule position
        console.start(total=cfg.train.steps, completed=start_step)
        yield run
    except BaseException:
        console.stop()
        if tracker is not None:
            tracker.finish("FAILED")
        raise
    finally:
        if pipeline is not None:
            pipeline.close()
        _stop(workers, learner)
    console.stop()
    tracker.finish()


def write_summary(run: RunState, step: int) -> dict[str, Any]:
    summary = {"step": step, **run.last_eval}
    (run.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def start_ray_and_workers(cfg: ExperimentConfig, policy_cfg: PolicyConfig, console: Console) -> Any:
    import ray

    if not ray.is_initialized():
        address = cfg.cluster.address or os.environ.get("RAY_ADDRESS")  # `ray job submit` sets it for its driver
        if address:
            ray.init(address=address, log_to_driver=True)
        else:
            # address="local": always a fresh embedded instance, never one some other process started
            ray.init(address="local", num_cpus=cfg.cluster.num_cpus, include_dashboard=cfg.cluster.dashboard, log_to_driver=True, configure_logging=False)
    r = cfg.rollout
    placement_group, scheduling = place_roles(cfg)  # fails fast when the cluster cannot hold the run
    workers = spawn_workers(
        r.num_workers, policy_cfg, engine=r.engine, batch_size=r.batch_size, cpus=r.cpus_per_worker, gpus=r.gpus_per_worker, torch_threads=r.torch_threads,
        engine_options=vllm_engine_options(r, max_position_embeddings=policy_cfg.max_position_embeddings, seed=cfg.run.seed, learner_gpus=cfg.cluster.learner_gpus)
        if r.engine == "vllm"
        else None,
        scheduling=scheduling,
    )
    workers.placement_group = placement_group
    console.log(f"{len(workers)} rollout worker(s) ready on {len(set(worker_nodes(workers)))} node(s), placement {cfg.cluster.placement}")
    return workers


def _stop(workers: Any, learner: Any) -> None:
    if learner is not None and hasattr(learner, "close"):
        learner.close()
    stop_workers(workers)


def stop_workers(workers: Any) -> None:
    import ray

    for w in workers:
        ray.kill(w, no_restart=True)
    if workers.placement_group is not None:
        from ray.util.placement_group import remove_placement_group

        remove_placement_group(workers.placement_group)
