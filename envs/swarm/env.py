"""The `swarm` environment: "for each of these N entities, find attribute X", N = the level.

A task names an attribute, the width N and N entities of a generated corpus
(`envs.swarm.corpus`): `age 4: kob tam ril sut`. The entities are the task's items: an
assignment may point at them by index (`@a 1-4`, `envs.actions`), which is why the prompt states
N (a policy this small cannot count 16 names reliably, and copying them is what failed at width
8: see docs/parl.md). The answer is the table `name value,...`, scored by item-level F1
(`Verdict.score`; `passed` when F1 == 1). The work decomposes into N independent look-ups, each one `search` call, so it can
be done serially by the orchestrator with its own tools or in parallel by sub-agents.

Held-out split by entity: an entity is held out by a stable hash of its name, training tasks
use only training entities and evaluation tasks only held-out ones, so a policy cannot pass
evaluation by having memorised facts seen during training.

`latency_s` adds a fixed delay to every tool call: a deliberately slow tool, for concurrency
tests and latency benchmarks (0 in training).
"""

from __future__ import annotations

import time

import numpy as np

from envs import syntax as S
from envs.actions import final_answer, tool_step
from envs.base import Step, Task, Verdict, strip_self_verdict
from envs.split import HeldoutSplit, HeldoutStream, stable_hash
from envs.swarm.answer import format_table, item_f1, parse_table
from envs.swarm.corpus import ATTRIBUTES, Corpus
from envs.swarm.tools import calc, search

LEVELS = tuple(range(1, 17))  # task width N


class SwarmEnv:
    name = "swarm"

    def __init__(
        self,
        levels=(2, 3, 4),
        eval_size: int = 64,
        eval_seed: int = 1234,
        heldout_fraction: float = 0.1,
        corpus_size: int = 600,
        corpus_seed: int = 0,
        parallel_fraction: float = 0.5,
        latency_s: float = 0.0,
    ):
        bad = [lv for lv in levels if lv not in LEVELS]
        if bad or not levels:
            raise ValueError(f"swarm levels (task widths) must be among {LEVELS}, got {list(levels)}")
        self.levels = tuple(levels)
        self.eval_size = eval_size
        self.eval_seed = eval_seed
        self.parallel_fraction = parallel_fraction
        self.latency_s = latency_s
        self.corpus = Corpus(corpus_size, corpus_seed)
        split = HeldoutSplit(heldout_fraction)
        self.heldout_names = [n for n in self.corpus.names if split.contains(f"swarm/{n}")]
        self.train_names = [n for n in self.corpus.names if not split.contains(f"swarm/{n}")]
        if len(self.heldout_names) < max(self.levels) or len(self.train_names) < max(self.levels):
            raise ValueError("corpus too small for the held-out split at these levels")
        self._eval_stream = HeldoutStream(lambda rng, i: self._draw(rng, heldout=True), eval_seed)

    # ------------------------------------------------------------------ tasks

    def _draw(self, rng: np.random.Generator, heldout: bool) -> Task:
        pool = self.heldout_names if heldout else self.train_names
        width = self.levels[int(rng.integers(len(self.levels)))]
        attr = ATTRIBUTES[int(rng.integers(len(ATTRIBUTES)))]
        names = [pool[i] for i in rng.choice(len(pool), size=width, replace=False)]
        prompt = f"{attr} {width}: {' '.join(names)}\n"
        answer = {n: self.corpus.facts[n][attr] for n in names}
        return Task(
            id=f"swarm/{stable_hash(prompt):016x}",
            env=self.name,
            prompt=prompt,
            payload={"attribute": attr, "entities": names, "answer": answer, "level": width},
        )

    def sample(self, n: int, rng: np.random.Generator) -> list[Task]:
        return [self._draw(rng, heldout=False) for _ in range(n)]

    def eval_tasks(self, n: int | None = None) -> list[Task]:
        return self._eval_stream.first(self.eval_size if n is None else n)

    def items(self, task: Task) -> list[str]:
        """The list the prompt shows, in order: what an index assignment (`@a 2`, `@a 1-4`) points at."""
        return task.payload["entities"]

    # ------------------------------------------------------------------ verifier

    def verify(self, task: Task, completion: str) -> Verdict:
        text = final_answer(strip_self_verdict(completion))
        if text is None:
            return Verdict(passed=False, score=0.0, parsed=False, reason="no answer")
        gold = {(n, str(v)) for n, v in task.payload["answer"].items()}
        f1 = item_f1(parse_table(text), gold)
        return Verdict(passed=f1 == 1.0, score=f1, parsed=True, reason=f"item F1 {f1:.2f}")

    # ------------------------------------------------------------------ tools

    def call_tool(self, tool: str, arg: str) -> str:
        """Run `search` or `calc`; the result text (no exception escapes)."""
        if self.latency_s:
            time.sleep(self.latency_s)
        if tool == "search":
            return search(self.corpus, arg)
        if tool == "calc":
            return calc(arg)
        return "err no tool"

    def step(self, task: Task, action_text: str) -> Step:
        """One sub-agent turn: a `search`/`calc` call or the answer (the orchestrator's spawns and
        assignments need the rollout workers: `rollout.swarm.turn`)."""
        return tool_step(action_text, self.call_tool)

    # ------------------------------------------------------------------ demonstrations

    def oracle(self, task: Task) -> str:
        """The correct final answer action (`=kob 42,tam 17`)."""
        return S.ANSWER + format_table(task.payload["answer"]) + "\n"

    def serial_transcript(self, task: Task) -> str:
        """The orchestrator alone: one search per entity, then the answer."""
        looks = "".join(f"{S.SEARCH}{n}\n{S.observation([self.corpus.record(n)])}" for n in task.payload["entities"])
        return looks + self.oracle(task)

    def parallel_transcript(self, task: Task) -> str:
        """One stage: a sub-agent role per attribute, one instance per entity (`@a 1-N`: every item
        by index), then the answer."""
        p = task.payload
        actions = [f"{S.SPAWN}a {p['attribute']}", f"{S.ASSIGN}a 1-{p['level']}"]
        results = [f"{n} {v}" for n, v in p["answer"].items()]
        return S.SEP.join(actions) + "\n" + S.observation(results) + self.oracle(task)

    def subagent_transcript(self, attribute: str, name: str) -> tuple[str, str]:
        """(prompt, completion) of a sub-agent that looks up one fact."""
        value = self.corpus.facts[name][attribute]
        return S.subagent_prompt(attribute, name), f"{S.SEARCH}{name}\n{S.observation([self.corpus.record(name)])}{S.ANSWER}{value}\n"

    def demonstrations(self, n: int, rng: np.random.Generator) -> list[dict]:
        """`n` SFT examples from the training split: half orchestrator transcripts (serial or
        parallel, `parallel_fraction` of them parallel), half sub-agent transcripts.

        Each example also carries `segments`: the completion cut into `[text, trainable]` pieces,
        observation lines untrained. They are what the runtime writes, not what the policy says,
        and their numbers are random facts: trained on, they teach the policy to guess numbers
        instead of copying them out of the observation (a sub-agent then answers `=88` after
        `>age 98 pin 38`)."""
        out = []
        for i, task in enumerate(self.sample(n, rng)):
            if i % 2 == 0:
                parallel = rng.random() < self.parallel_fraction
                prompt, completion = task.prompt, (self.parallel_transcript if parallel else self.serial_transcript)(task)
            else:
                prompt, completion = self.subagent_transcript(task.payload["attribute"], task.payload["entities"][0])
            out.append({"prompt": prompt, "completion": completion, "segments": transcript_segments(completion)})
        return out

    def alphabet(self) -> str:
        return "abcdefghijklmnopqrstuvwxyz0123456789 +@?#=>;,:-\n"


def transcript_segments(completion: str) -> list[list]:
    """`[[text, trainable], ...]` covering `completion`: observation lines are not trainable."""
    return [[line, not line.startswith(S.OBSERVATION)] for line in completion.splitlines(keepends=True)]
