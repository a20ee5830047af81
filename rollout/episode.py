"""Episodes: everything that happened while a policy worked on one task.

An `Episode` is a list of `Turn`s (for single-turn envs: one assistant turn), the verdict and
the reward breakdown. PARL episodes additionally hold sub-agent episodes with their stage
index. Episodes become Arrow records; one training step's episodes are one Parquet file.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


@dataclass
class Turn:
    """One message. Only turns with `trainable=True` contribute to the policy loss."""

    role: str  # "user" | "assistant" | "tool"
    text: str
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)  # sampler log-probs, one per token id
    trainable: bool = False
    stage: int = 0  # PARL: orchestrator stage this turn belongs to
    policy_version: int = -1  # assistant turns: the weights version that sampled them


@dataclass
class RewardBreakdown:
    """Each reward component by name, the weights in force, and the scheduled total."""

    components: dict[str, float] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)
    total: float = 0.0
    errors: list[str] = field(default_factory=list)  # components that raised and scored 0


@dataclass
class Episode:
    task_id: str
    env: str
    prompt: str
    prompt_ids: list[int]
    turns: list[Turn]
    finish_reason: str = ""  # "stop" | "length" | "error"
    group: int = 0  # index of the task inside the step: completions of one task share it
    step: int = 0
    policy_version: int = -1  # weights version that sampled it; staleness = learner version - this
    verdict: dict[str, Any] = field(default_factory=dict)
    reward: RewardBreakdown = field(default_factory=RewardBreakdown)
    advantage: float = 0.0
    stage: int = 0  # PARL: the orchestrator stage that spawned this episode
    sub_episodes: list["Episode"] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    images: list[bytes] = field(default_factory=list)  # the prompt's images (PNG bytes), kept in Parquet

    @property
    def completion_text(self) -> str:
        return "".join(t.text for t in self.turns if t.role == "assistant")

    @property
    def completion_ids(self) -> list[int]:
        return [i for t in self.turns if t.trainable for i in t.token_ids]

    @property
    def completion_logprobs(self) -> list[float]:
        return [lp for t in self.turns if t.trainable for lp in t.logprobs]

    def to_record(self) -> dict[str, Any]:
        """A flat Arrow-friendly row; nested parts (turns, sub-episodes) are JSON columns."""
        return {
            "step": self.step,
            "policy_version": self.policy_version,
            "group": self.group,
            "task_id": self.task_id,
            "env": self.env,
            "prompt": self.prompt,
            "completion": self.completion_text,
            "prompt_tokens": len(self.prompt_ids),
            "completion_tokens": len(self.completion_ids),
            "finish_reason": self.finish_reason,
            "passed": bool(self.verdict.get("passed", False)),
            "verdict": json.dumps(self.verdict, sort_keys=True, default=str),
            "reward": float(self.reward.total),
            "reward_components": json.dumps(self.reward.components, sort_keys=True),
            "reward_weights": json.dumps(self.reward.weights, sort_keys=True),
            "reward_errors": json.dumps(self.reward.errors),
            "advantage": float(self.advantage),
            "stage": self.stage,
            "turns": json.dumps([asdict(t) for t in self.turns]),
            "prompt_ids": json.dumps(self.prompt_ids),
            "sub_episodes": json.dumps([e.to_record() for e in self.sub_episodes]),
            "timings": json.dumps(self.timings, sort_keys=True),
            "images": list(self.images),
        }

    def json_record(self) -> dict[str, Any]:
        """`to_record` for JSON artifacts: images as their sha256 (the bytes stay in Parquet)."""
        import hashlib

        return {**self.to_record(), "images": [hashlib.sha256(b).hexdigest() for b in self.images]}

    @classmethod
    def from_record(cls, row: dict[str, Any]) -> "Episode":
        return cls(
            task_id=row["task_id"],
            env=row["env"],
            prompt=row["prompt"],
            prompt_ids=json.loads(row["prompt_ids"]),
            turns=[Turn(**t) for t in json.loads(row["turns"])],
            finish_reason=row["finish_reason"],
            group=row["group"],
            step=row["step"],
            policy_version=row.get("policy_version", -1),
            verdict=json.loads(row["verdict"]),
            reward=RewardBreakdown(
                components=json.loads(row["reward_components"]),
                weights=json.loads(row["reward_weights"]),
                total=row["reward"],
                errors=json.loads(row["reward_errors"]),
            ),
            advantage=row["advantage"],
            stage=row["stage"],
            sub_episodes=[cls.from_record(r) for r in json.loads(row["sub_episodes"])],
            timings=json.loads(row["timings"]),
            images=list(row.get("images") or []),
        )


def write_parquet(episodes: list[Episode], path: str | Path) -> Path:
    """Write one step's episodes to `path` atomically (temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist([e.to_record() for e in episodes])
    tmp = path.with_suffix(".parquet.tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)
    return path


def read_parquet(path: str | Path) -> list[Episode]:
    return [Episode.from_record(r) for r in pq.read_table(path).to_pylist()]
