"""The swarm env: corpus, tools, held-out split by entity, item-F1 verifier, demonstrations."""

from __future__ import annotations

import numpy as np
import pytest

from envs.actions import final_answer
from envs.registry import make_env
from envs.swarm import SwarmEnv
from envs.swarm.answer import item_f1, parse_table
from envs.swarm.corpus import Corpus
from envs.swarm.tools import calc, search


@pytest.fixture(scope="module")
def env() -> SwarmEnv:
    return SwarmEnv(levels=(2, 4))


def test_corpus_is_a_function_of_its_seed():
    a, b, c = Corpus(100, seed=1), Corpus(100, seed=1), Corpus(100, seed=2)
    assert a.facts == b.facts and a.facts != c.facts
    assert all(len(n) == 3 for n in a.names)
    assert all(10 <= v <= 99 for f in a.facts.values() for v in f.values())


def test_tools():
    corpus = Corpus(50)
    name = corpus.names[3]
    f = corpus.facts[name]
    assert search(corpus, name) == f"age {f['age']} pin {f['pin']}"
    assert search(corpus, "zzz") == "none"
    assert calc("3*(4+5)-2") == "25"
    assert calc("__import__('os')") == "err" and calc("2**10") == "err" and calc("1/2") == "err"


def test_training_and_heldout_tasks_use_disjoint_entities(env):
    train = env.sample(300, np.random.default_rng(0))
    held = env.eval_tasks(40)
    train_names = {n for t in train for n in t.payload["entities"]}
    held_names = {n for t in held for n in t.payload["entities"]}
    assert train_names and held_names and not train_names & held_names
    assert env.eval_tasks(40) == held  # fixed
    assert {t.payload["level"] for t in train} == {2, 4}
    for t in train[:20]:
        assert len(t.payload["entities"]) == t.payload["level"] == len(t.prompt.split()) - 2 == int(t.prompt.split()[1].rstrip(":"))


def test_item_f1_partial_credit():
    env = SwarmEnv(levels=(4,))
    task = env.sample(1, np.random.default_rng(5))[0]
    rows = list(task.payload["answer"].items())
    right = ",".join(f"{n} {v}" for n, v in rows)
    assert env.verify(task, "=" + right).passed
    half = ",".join(f"{n} {v}" for n, v in rows[:2])
    v = env.verify(task, "=" + half)
    assert not v.passed and v.score == pytest.approx(2 * 1 * 0.5 / 1.5)
    wrong_value = ",".join(f"{n} {v + 1 if i == 0 else v}" for i, (n, v) in enumerate(rows))
    assert env.verify(task, "=" + wrong_value).score == pytest.approx(0.75)
    padded = right + ",xxx 11,yyy 12,zzz 13,www 14"
    assert env.verify(task, "=" + padded).score == pytest.approx(2 * 0.5 * 1 / 1.5)  # guessing extra rows costs precision
    assert not env.verify(task, "?kob\n>age 1\n").parsed
    # the last answer counts, also when it follows other actions in the same turn
    assert env.verify(task, f"=nothing\n+a age;={right}\n").passed


def test_answer_parsing():
    assert final_answer("?kob\n>x\n=kob 1\n") == "kob 1"
    assert final_answer("=a 1\n=b 2\n") == "b 2"
    assert final_answer("?kob\n") is None
    assert parse_table("kob 1,tam,ril 2 3, sut 4 ") == {("kob", "1"), ("sut", "4")}
    assert item_f1(set(), {("a", "1")}) == 0.0


def test_oracle_transcripts_pass_and_differ_in_shape(env):
    for task in env.sample(20, np.random.default_rng(1)):
        serial, parallel = env.serial_transcript(task), env.parallel_transcript(task)
        assert env.verify(task, serial).passed and env.verify(task, parallel).passed
        n = task.payload["level"]
        assert serial.count("?") == n and "@" not in serial
        assert parallel.count("@") == 1 and f"@a 1-{n}\n" in parallel and "?" not in parallel
        # compact enough for the character-level policies
        assert len(task.prompt + serial) <= 32 * n + 30


def test_demonstrations_mix_serial_parallel_and_subagents(env):
    demos = env.demonstrations(200, np.random.default_rng(0))
    orch = [d for d in demos if d["prompt"].split()[0] in ("age", "pin") and len(d["prompt"].split()) > 2]
    subs = [d for d in demos if len(d["prompt"].split()) == 2]
    assert len(orch) == len(subs) == 100
    n_parallel = sum("@" in d["completion"] for d in orch)
    assert 30 < n_parallel < 70
    for d in subs:
        attr, name = d["prompt"].split()
        assert d["completion"] == f"?{name}\n>{env.corpus.record(name)}\n={env.corpus.facts[name][attr]}\n"


def test_slow_tool_and_registry():
    import time

    env = make_env("swarm", levels=(2,), latency_s=0.2)
    t0 = time.perf_counter()
    assert env.call_tool("calc", "1+1") == "2"
    assert time.perf_counter() - t0 >= 0.2
    assert env.call_tool("nope", "x").startswith("err")
    with pytest.raises(ValueError, match="levels"):
        SwarmEnv(levels=(0,))


def test_env_parallel_fraction_sets_the_demonstration_mix():
    from envs.registry import env_kwargs
    from rl.config import ConfigError, validate_config

    def parallel_share(cfg) -> float:
        demos = make_env("swarm", **env_kwargs(cfg)).demonstrations(400, np.random.default_rng(0))
        orch = demos[::2]  # even positions are orchestrator transcripts
        return sum("@" in d["completion"] for d in orch) / len(orch)

    serial_leaning = validate_config({"policy": {}, "env": {"name": "swarm", "levels": [2, 3], "parallel_fraction": 0.1}})
    assert 0.03 < parallel_share(serial_leaning) < 0.17
    assert parallel_share(validate_config({"policy": {}, "env": {"name": "swarm", "levels": [2, 3], "parallel_fraction": 0.0}})) == 0.0
    assert 0.4 < parallel_share(validate_config({"policy": {}, "env": {"name": "swarm", "levels": [2, 3]}})) < 0.6  # empty: half
    with pytest.raises(ConfigError, match="env.parallel_fraction is for env swarm"):
        validate_config({"policy": {}, "env": {"name": "math", "parallel_fraction": 0.1}})
    with pytest.raises(ConfigError, match="parallel_fraction"):
        validate_config({"policy": {}, "env": {"name": "swarm", "parallel_fraction": 1.5}})
