"""Held-out evaluation: sampled pass@1 on the env's evaluation split.

With several samples per task, pass@1 is the mean over all of them: the same quantity as with
one sample (the chance that one sample passes), measured with less noise."""

from __future__ import annotations

from collections import defaultdict

from envs.base import Env, Task
from envs.registry import verify_batch
from rl.self_judgement import self_judgement_metrics, stated_and_graded
from rollout.collect import collect
from rollout.engines.base import SamplingParams
from rollout.episode import Episode


def evaluate(
    workers: list,
    env: Env,
    tasks: list[Task],
    tokenizer,
    params: SamplingParams,
    seed: int,
    verify_workers: int = 1,
    rollout=None,
    samples: int = 1,
) -> tuple[dict[str, float], list[Episode]]:
    """`samples` completions per held-out task. Returns metrics (overall, per level, per task kind
    where the env has kinds, mean verifier score, the rollout's own metrics under `eval/`, and
    `eval/self_verify/...` where the completions end with a self-verdict, see `rl.self_judgement`) and
    the episodes, task-major: the samples of `tasks[i]` are `episodes[i * samples:(i + 1) * samples]`.
    `rollout`: an `rl.rollout_choice.Rollout` (default: single-turn `collect`)."""
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    run = rollout.run if rollout is not None else collect
    episodes = run(workers, tasks, tokenizer, params, group_size=samples, seed=seed, step=-1)
    tasks = [t for t in tasks for _ in range(samples)]
    verdicts = verify_batch(env, tasks, [e.completion_text for e in episodes], verify_workers)
    by_level: dict[str, list[float]] = defaultdict(list)
    for task, ep, verdict in zip(tasks, episodes, verdicts):
        ep.verdict = {"passed": verdict.passed, "score": verdict.score, "parsed": verdict.parsed, "reason": verdict.reason}
        by_level["all"].append(float(verdict.passed))
        level = task.payload.get("level")
        if level is not None:
            by_level[f"level{level}"].append(float(verdict.passed))
        kind = task.payload.get("kind")
        if kind is not None:
            by_level[f"kind_{kind}"].append(float(verdict.passed))
    metrics = {f"eval/pass_at_1_{k}" if k != "all" else "eval/pass_at_1": sum(v) / len(v) for k, v in by_level.items()}
    metrics["eval/score"] = sum(v.score for v in verdicts) / len(verdicts)
    # where the policy judges its own answers: calibration, and best-of-k by its verdicts
    metrics.update(self_judgement_metrics(*stated_and_graded(episodes), [t.payload.get("level") for t in tasks], samples, seed))
    if rollout is not None:
        metrics.update({f"eval/{k}": v for k, v in rollout.metrics(episodes).items()})
    return metrics, episodes
