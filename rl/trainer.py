"""Outcome-reward RL, the whole loop.

The algorithm is GRPO-family policy gradient with verifiable rewards:

  for each step:
    1. sample `tasks_per_step` training tasks from the env (never the held-out split);
    2. sample `group_size` completions per task with the current policy (Ray rollout workers);
       for envs with sub-agents, PARL episodes: orchestrator turns + parallel frozen sub-agents
       (`rl.rollout_choice`, `rollout.swarm`);
    3. verify each completion and score it: reward components (outcome, format, ...) weighted
       by their schedule at this step;
    4. advantages relative to the task's group (GRPO / RLOO / Dr. GRPO); groups whose rewards
       are all equal carry no signal and are dropped (dynamic sampling);
    5. a clipped-ratio (PPO/DAPO) policy-gradient step on the completion tokens, with Muon on the
       hidden matrices, AdamW elsewhere, and QK-Clip on attention heads whose logits grow past tau;
    6. push the new weights to the rollout workers (one object-store put);
    7. log metrics to MLflow, write the step's episodes to Parquet, evaluate and checkpoint on
       schedule. With `train.eval_ema`, the evaluated policy is a moving average of the trained
       weights (`rl.policy_average`), swapped into the workers for the evaluation only.

With `policy.lora` the learner trains adapters on the frozen policy (`policies.lora`), applied
after the SFT bootstrap (a full fine-tune); the workers, built from the base model folder, are
served the merged weights, and so is the evaluated average. Checkpoints keep the adapter model.

With `rollout.max_staleness = 0` rollouts are synchronous: every completion is sampled by the
policy being updated. With k >= 1 the batches of the next k steps are generated while the learner
trains (`rl.rollout_pipeline`); either way the sampler log-probs are the "old" log-probs of the
PPO ratio, which corrects the off-policy samples.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from envs.registry import verifier_errors, verify_batch
from policies.lora import apply_lora, save_lora_settings, served_weights
from rewards.scoring import score_batch
from rl.algorithms import get_advantage, nonzero_variance_groups
from rl.batch import build_batch
from rl.checkpoint import latest_checkpoint, load_average, load_checkpoint, save_checkpoint, save_policy_skeleton
from rl.config import ExperimentConfig, to_yaml
from rl.console import Console
from rl.evaluate import evaluate
from rl.experiment_env import experiment_env
from rl.learner import Learner
from rl.optim.schedule import run_progress
from rl.placement import place_roles, worker_nodes
from rl.policy_average import AVERAGE_VERSION, PolicyAverage
from rl.rollout_choice import choose_rollout
from rl.rollout_pipeline import RolloutPipeline
from rl.sample_grid import log_sample_grid
from rl.self_judgement import log_reliability_diagram, stated_and_graded
from rl.verdict_credit import verdict_token_advantages
from rl.sft import run_sft
from rl.tracking import Tracker, default_uri
from rollout.engines.base import SamplingParams
from rollout.episode import write_parquet
from rollout.worker import push_weights, spawn_workers


def train(cfg: ExperimentConfig, run_dir: Path, *, resume: bool = False) -> dict[str, float]:
    """Run (or resume) one experiment in `run_dir`. Returns the final metrics."""
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

    from policies.model import build_policy
    from policies.vlm import processor_for

    model, tokenizer = build_policy(policy_cfg, seed=cfg.run.seed)
    if policy_cfg.lora is not None:
        apply_lora(model, policy_cfg.lora, seed=cfg.run.seed)
    served = served_weights(model)  # what the workers load: the merged weights under LoRA
    processor = processor_for(policy_cfg, tokenizer)  # None for a text-only policy
    skeleton = save_policy_skeleton(model, tokenizer, processor, run_dir)  # what `swarmrl export` / `eval` rebuild a checkpoint on
    if policy_cfg.lora is not None:
        save_lora_settings(policy_cfg.lora, skeleton)  # how export merges a checkpoint's adapters
    learner = Learner(model, cfg)
    start_step, rl_wall_before = 0, 0.0
    ckpt = latest_checkpoint(run_dir) if resume else None
    if ckpt is not None:
        restored = load_checkpoint(ckpt, model, learner.optimizer)
        start_step, rl_wall_before = restored["step"], float(restored["extra"].get("rl_wall_s", 0.0))
        console.log(f"resumed from {ckpt} (step {start_step})")
    average = PolicyAverage(served, cfg.train.eval_ema) if cfg.train.eval_ema is not None else None
    if average is not None and ckpt is not None and (saved := load_average(ckpt)) is not None:
        average.load_state_dict(saved)

    workers = _start_ray_and_workers(cfg, policy_cfg, console)
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
    push_weights(workers, served.state_dict(), version=start_step)
    rollout = choose_rollout(cfg, env, workers, served, policy_cfg.path, processor)

    params = SamplingParams(max_new_tokens=cfg.rollout.max_new_tokens, temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p)
    pipeline = RolloutPipeline(cfg, env, rollout, workers, tokenizer, params, last_step=cfg.train.steps)
    eval_params = SamplingParams(
        max_new_tokens=cfg.rollout.max_new_tokens,
        temperature=cfg.rollout.temperature if cfg.train.eval_temperature is None else cfg.train.eval_temperature,
        top_p=cfg.rollout.top_p,
    )
    eval_tasks = env.eval_tasks(cfg.env.eval_size)
    advantage_fn = get_advantage(cfg.algorithm.advantage)

    def run_eval(step: int) -> dict[str, float]:
        if average is not None:  # the workers serve the average for the evaluation only
            pipeline.settle()
            push_weights(workers, average.state_dict(), version=AVERAGE_VERSION)
        # The eval seed is fixed so that successive evaluations differ only by the policy.
        metrics, episodes = evaluate(
            workers,
            env,
            eval_tasks,
            tokenizer,
            eval_params,
            seed=cfg.run.seed + 7_777_777,
            verify_workers=cfg.sandbox.workers,
            rollout=rollout,
            samples=cfg.train.eval_samples,
        )
        if average is not None:
            push_weights(workers, served.state_dict(), version=step)
        if cfg.tracking.sample_episodes and step > tracker.logged_until:
            first = episodes[:: cfg.train.eval_samples]  # one per task, as many tasks as possible
            sample = [e.json_record() for e in first[: cfg.tracking.sample_episodes]]
            tracker.log_dict(sample, f"episodes/eval_step_{step:06d}.json")
            log_sample_grid(tracker, run_dir, eval_tasks, first, step)
        if step > tracker.logged_until:
            log_reliability_diagram(tracker, run_dir, *stated_and_graded(episodes), step)
        per_task = f" x {cfg.train.eval_samples} samples" if cfg.train.eval_samples > 1 else ""
        console.log(f"step {step}: held-out pass@1 {metrics['eval/pass_at_1']:.3f} on {len(eval_tasks)} problems{per_task}")
        return metrics

    last_eval: dict[str, float] = {}
    if start_step == 0:
        last_eval = run_eval(0)
        tracker.log_metrics(last_eval, 0)
    rl_t0 = time.perf_counter() - rl_wall_before  # a resumed run keeps its time budget and LR schedule position
    step = start_step
    console.start(total=cfg.train.steps, completed=start_step)
    try:
        for step in range(start_step + 1, cfg.train.steps + 1):
            t0 = time.perf_counter()

            # 1-2. tasks and rollouts (generated ahead of time when rollout.max_staleness > 0)
            batch_in = pipeline.next(step)
            tasks, episodes, t_rollout = batch_in.tasks, batch_in.episodes, batch_in.generate_s

            # 3. verify and score
            verdicts = verify_batch(env, [tasks[e.group] for e in episodes], [e.completion_text for e in episodes], cfg.sandbox.workers)
            scored = score_batch(episodes, [tasks[e.group] for e in episodes], verdicts, cfg.rewards, step)
            for e, v, r in zip(episodes, verdicts, scored.breakdowns):
                e.verdict = {"passed": v.passed, "score": v.score, "parsed": v.parsed, "reason": v.reason}
                e.reward = r

            # 4. group-relative advantages, dynamic sampling
            rewards = torch.tensor([e.reward.total for e in episodes], dtype=torch.float32)
            groups = torch.tensor([e.group for e in episodes], dtype=torch.long)
            advantages, token_advantages = advantage_fn(rewards, groups), None
            if cfg.algorithm.verdict_credit:  # the answer and the verdict on it credited apart
                advantages, token_advantages = verdict_token_advantages(episodes, groups, advantage_fn, tokenizer)
            keep = nonzero_variance_groups(rewards, groups) if cfg.algorithm.dynamic_sampling else torch.ones_like(rewards, dtype=torch.bool)
            for e, a in zip(episodes, advantages.tolist()):
                e.advantage = a

            # 5. learner step (skipped when no group carries signal), at the scheduled lr
            progress = run_progress(step - 1, cfg.train.steps, time.perf_counter() - rl_t0, cfg.train.max_minutes)
            metrics: dict[str, float] = {"learner/lr_factor": learner.schedule_lr(step, progress)}
            kept = [i for i, k in enumerate(keep.tolist()) if k]
            if kept:
                batch = build_batch(
                    [episodes[i] for i in kept],
                    [episodes[i].advantage for i in kept],
                    tokenizer.pad_token_id,
                    getattr(processor, "image_processor", None),
                    None if token_advantages is None else [token_advantages[i] for i in kept],
                )
                metrics.update(learner.update(batch))
            if average is not None:
                average.update(served)

            # 6. new weights to the rollout workers
            push_weights(workers, served.state_dict(), version=step)

            # 7. bookkeeping
            write_parquet(episodes, run_dir / "episodes" / f"step_{step:06d}.parquet")
            step_s = time.perf_counter() - t0
            n_tokens = sum(len(e.completion_ids) for e in episodes)
            metrics.update(scored.metrics)
            metrics.update(rollout.metrics(episodes))
            metrics.update(_fault_metrics(workers, verdicts, console, step))
            metrics.update(pipeline.metrics(batch_in))
            metrics.update(
                {
                    "reward/mean": float(rewards.mean()),
                    "train/pass_rate": float(np.mean([v.passed for v in verdicts])),
                    "train/kept_fraction": float(keep.float().mean()),
                    "train/completion_tokens": n_tokens / len(episodes),
                    "rollout/completions_per_s": len(episodes) / t_rollout,
                    "rollout/tokens_per_s": n_tokens / t_rollout,
                    "time/rollout_s": t_rollout,
                    "time/step_s": step_s,
                    "time/rl_wall_s": time.perf_counter() - rl_t0,
                }
            )
            out_of_time = cfg.train.max_minutes is not None and (time.perf_counter() - rl_t0) > 60 * cfg.train.max_minutes
            final = step == cfg.train.steps or out_of_time
            if final or (cfg.train.eval_every and step % cfg.train.eval_every == 0):
                last_eval = run_eval(step)
                metrics.update(last_eval)
            tracker.log_metrics(metrics, step)
            console.advance(step, reward=metrics["reward/mean"], pass_rate=metrics["train/pass_rate"], heldout=last_eval.get("eval/pass_at_1"))
            if final or (cfg.checkpoint.every and step % cfg.checkpoint.every == 0):
                save_checkpoint(
                    run_dir, step, model, learner.optimizer,
                    {"mlflow_run_id": tracker.run_id, "rl_wall_s": time.perf_counter() - rl_t0},
                    keep=cfg.checkpoint.keep,
                    average=average.state_dict() if average is not None else None,
                )
            if out_of_time:
                console.log(f"stopping after step {step}: train.max_minutes={cfg.train.max_minutes} reached")
                break
    except BaseException:
        console.stop()
        tracker.finish("FAILED")
        raise
    finally:
        pipeline.close()
        _stop_workers(workers)
    console.stop()
    tracker.finish()
    summary = {"step": step, **last_eval}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _start_ray_and_workers(cfg: ExperimentConfig, policy_cfg, console: Console) -> list:
    import ray

    if not ray.is_initialized():
        address = cfg.cluster.address or os.environ.get("RAY_ADDRESS")  # `ray job submit` sets it for its driver
        if address:
            ray.init(address=address, log_to_driver=True)
        else:
            # address="local": always a fresh embedded instance, never one some other process started
            ray.init(address="local", num_cpus=cfg.cluster.num_cpus, include_dashboard=cfg.cluster.dashboard, log_to_driver=True, configure_logging=False)
    spec = {"policy": policy_cfg.model_dump(), "path": policy_cfg.path, "tokenizer": policy_cfg.tokenizer or policy_cfg.path}
    r = cfg.rollout
    placement_group, scheduling = place_roles(cfg)  # fails fast when the cluster cannot hold the run
    workers = spawn_workers(
        r.num_workers, spec, engine=r.engine, batch_size=r.batch_size, cpus=r.cpus_per_worker, gpus=r.gpus_per_worker, torch_threads=r.torch_threads,
        engine_options={"kv_cache_gib": r.vllm_kv_cache_gib, "seed": cfg.run.seed} if r.engine == "vllm" else None,
        scheduling=scheduling,
    )
    workers.placement_group = placement_group
    console.log(f"{len(workers)} rollout worker(s) ready on {len(set(worker_nodes(workers)))} node(s), placement {cfg.cluster.placement}")
    return workers


def _fault_metrics(workers, verdicts: list, console: Console, step: int) -> dict[str, float]:
    """Faults the step survived: rollout workers restarted (`rollout.recovery`), checks that crashed (`verify_batch`)."""
    restarts, crashed = workers.take_restarts(), verifier_errors(verdicts)
    if restarts or crashed:
        console.log(f"step {step}: {restarts} rollout worker restart(s) recovered, {crashed} verifier crash(es) scored 0")
    return {"faults/worker_restarts": float(restarts), "faults/verify_errors": float(crashed)}


def _stop_workers(workers: list) -> None:
    import ray

    for w in workers:
        ray.kill(w, no_restart=True)
    if workers.placement_group is not None:
        from ray.util.placement_group import remove_placement_group

        remove_placement_group(workers.placement_group)
