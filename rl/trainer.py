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

Setup and teardown (env, SFT bootstrap, policy, Ray workers, learner, MLflow, resume) live in
`rl.run_state.open_run`; steps 3-4 are `rl.step_scoring.score_step`; step 5 is
`rl.learner.Learner.update`, in the driver or in an actor that owns the learner's GPU
(`rl.learner_host`).
"""

from __future__ import annotations

import time
from pathlib import Path

from envs.registry import verifier_errors
from rl.config import ExperimentConfig
from rl.run_state import RunState, open_run, write_summary
from rl.step_scoring import record_on_episodes, score_step, training_batch
from rollout.episode import write_parquet


def train(cfg: ExperimentConfig, run_dir: Path, *, resume: bool = False) -> dict[str, float]:
    """Run (or resume) one experiment in `run_dir`. Returns the final metrics."""
    with open_run(cfg, run_dir, resume=resume) as run:
        step = run.start_step
        for step in range(run.start_step + 1, cfg.train.steps + 1):
            t0 = time.perf_counter()

            # 1-2. tasks from the env's training split and their rollouts (generated ahead of
            # time when rollout.max_staleness > 0)
            batch_in = run.pipeline.next(step)
            episodes = batch_in.episodes

            # 3-4. verify, score, group-relative advantages, dynamic sampling
            scored = score_step(run.env, batch_in.tasks, episodes, cfg.rewards, cfg.algorithm, step, run.tokenizer, cfg.sandbox.workers)

            # 5. learner step (skipped when no group carries signal), at the scheduled lr
            # 6. new weights to the rollout workers; with rollout.sleep_mode the engines sleep
            #    through the update and wake for the weights (`rollout.colocate`)
            metrics = run.update_then_push(step, lambda: _learner_step(run, episodes, scored, step))

            # 7. bookkeeping: the step's episodes, metrics, evaluation, checkpoint
            record_on_episodes(episodes, scored)
            write_parquet(episodes, run.run_dir / "episodes" / f"step_{step:06d}.parquet")
            metrics.update(_step_metrics(run, batch_in, scored, time.perf_counter() - t0, step))
            out_of_time = run.out_of_time()
            final = step == cfg.train.steps or out_of_time
            if final or (cfg.train.eval_every and step % cfg.train.eval_every == 0):
                metrics.update(run.evaluate(step))
            run.tracker.log_metrics(metrics, step)
            run.console.advance(step, reward=metrics["reward/mean"], pass_rate=metrics["train/pass_rate"], heldout=run.last_eval.get("eval/pass_at_1"))
            if final or (cfg.checkpoint.every and step % cfg.checkpoint.every == 0):
                run.checkpoint(step)
            if out_of_time:
                run.console.log(f"stopping after step {step}: train.max_minutes={cfg.train.max_minutes} reached")
                break
    return write_summary(run, step)


def _learner_step(run: RunState, episodes, scored, step: int) -> dict[str, float]:
    metrics: dict[str, float] = {"learner/lr_factor": run.learner.schedule_lr(step, run.progress(step))}
    if scored.kept:
        metrics.update(run.learner.update(training_batch(episodes, scored, run.tokenizer.pad_token_id, run.image_processor)))
    if run.average is not None:
        run.average.update(run.learner.served)
    return metrics


def _step_metrics(run: RunState, batch_in, scored, step_s: float, step: int) -> dict[str, float]:
    """Rewards, rollout speed, faults and timings of one step."""
    episodes, t_rollout = batch_in.episodes, batch_in.generate_s
    n_tokens = sum(len(e.completion_ids) for e in episodes)
    return {
        **scored.metrics,
        **run.rollout.metrics(episodes),
        **_fault_metrics(run, scored.verdicts, step),
        **run.pipeline.metrics(batch_in),
        "train/completion_tokens": n_tokens / len(episodes),
        "rollout/completions_per_s": len(episodes) / t_rollout,
        "rollout/tokens_per_s": n_tokens / t_rollout,
        "time/rollout_s": t_rollout,
        "time/step_s": step_s,
        "time/rl_wall_s": run.rl_seconds(),
    }


def _fault_metrics(run: RunState, verdicts: list, step: int) -> dict[str, float]:
    """Faults the step survived: rollout workers restarted (`rollout.recovery`), checks that crashed (`verify_batch`)."""
    restarts, crashed = run.workers.take_restarts(), verifier_errors(verdicts)
    if restarts or crashed:
        run.console.log(f"step {step}: {restarts} rollout worker restart(s) recovered, {crashed} verifier crash(es) scored 0")
    return {"faults/worker_restarts": float(restarts), "faults/verify_errors": float(crashed)}
