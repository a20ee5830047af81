"""PARL runtime: the strict action parser, turn execution, the critical path of episode trees,
and, on a real local Ray instance, concurrent stages, sub-agent isolation and frozen sub-agents.

Models are tiny and random-init, except `constant_policy`: a real model whose weights are set by
hand so that greedy decoding always emits one character (`?`: every sub-agent turn is then a
search call, which makes the deliberately slow tool run a known number of times).
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from envs import syntax as S
from envs.actions import Answer, Assign, ParseError, Spawn, ToolCall, parse_subagent_turn, parse_turn
from envs.swarm import SwarmEnv
from rewards.critical_path import critical_steps, stages_of, total_steps
from rollout.engines.base import SamplingParams
from rollout.episode import Episode, Turn, read_parquet, write_parquet
from rollout.swarm.budgets import Budgets
from rollout.swarm.subagent import SubagentSpec
from rollout.swarm.turn import execute_turn

# ----------------------------------------------------------------------------- parser


@pytest.mark.parametrize(
    "line, reason",
    [
        ("", "empty turn"),
        ("   \n", "empty turn"),
        ("hello", "unknown action"),
        ("+a age;;@a kob", "empty action"),
        ("+A age", "bad name"),
        ("+abcd age", "bad name"),
        ("+1a age", "bad name"),
        ("+a", "no instructions"),
        ("+a   ", "no instructions"),
        ("@a", "no task"),
        ("@a,,b kob", "bad name"),
        ("@ kob", "bad name"),
        ("?", "empty tool arg"),
        ("#  ", "empty tool arg"),
        ("=", "empty answer"),
        ("=kob 1;?tam", "answer not last"),
        ("?kob\n?tam", "one line per turn"),
        (";".join(["?kob"] * 17), "over 16 actions"),
        ("\x00\x01", "unknown action"),
        ("@a 0", "bad range"),
        ("@a 7-3", "bad range"),
        ("@a 0-2", "bad range"),
    ],
)
def test_parser_rejects_malformed_turns(line, reason):
    with pytest.raises(ParseError, match=reason):
        parse_turn(line)


def test_parser_reads_every_action():
    assert parse_turn("+a age;+b2 find pin;@a,b2 kob;?tam;#3*4;=kob 1,tam 2\n") == [
        Spawn("a", "age"),
        Spawn("b2", "find pin"),
        Assign(("a", "b2"), "kob"),
        ToolCall("search", "tam"),
        ToolCall("calc", "3*4"),
        Answer("kob 1,tam 2"),
    ]
    assert parse_turn("@a 1-16;@b 3") == [Assign(("a",), "1-16"), Assign(("b",), "3")]  # items by index (swarm)
    assert parse_subagent_turn("?kob\n") == ToolCall("search", "kob")
    for bad, reason in [("+a age", "cannot spawn"), ("@a kob", "cannot spawn"), ("?kob;=1", "one action")]:
        with pytest.raises(ParseError, match=reason):
            parse_subagent_turn(bad)


def test_parser_never_raises_anything_else():
    rng = np.random.default_rng(0)
    alphabet = list("+@?#=;, \nabkz09>")
    for _ in range(2000):
        line = "".join(rng.choice(alphabet, size=int(rng.integers(0, 20))))
        try:
            parse_turn(line)
        except ParseError:
            pass


# ----------------------------------------------------------------------------- one turn


def test_execute_turn_errors_become_observations():
    env = SwarmEnv(levels=(2,))
    name = env.train_names[0]
    budgets = Budgets(max_subagents_per_stage=2)
    roles: dict[str, str] = {}
    out = execute_turn("+a age;@a x1;@b x2;?" + name + ";@a x3;@a x4", roles, env.call_tool, stage=3, budgets=budgets)
    assert roles == {"a": "age"}
    assert out.items == [0, "err no agent b", env.corpus.record(name), 1, "x4 fail"]
    assert [(s.name, s.instructions, s.task, s.stage) for s in out.specs] == [("a", "age", "x1", 3), ("a", "age", "x3", 3)]
    assert out.answer is None
    assert execute_turn("garbage", roles, env.call_tool, 0, budgets).items == ["err unknown action"]
    assert execute_turn("+c pin", roles, env.call_tool, 0, budgets).items == ["ok"] and roles["c"] == "pin"
    # roles persist across turns; an answer ends the turn's work
    done = execute_turn("@c y;=y 1", roles, env.call_tool, 1, budgets)
    assert done.answer == "y 1" and done.specs[0].instructions == "pin"


def test_index_assignments_point_at_the_items_the_prompt_shows():
    """`@a 1-16` runs one instance per item, on the item itself; the observation the runtime
    builds from their answers is the one the parallel demonstration trains on."""
    env = SwarmEnv(levels=(16,))
    task = env.sample(1, np.random.default_rng(3))[0]
    names, attr = env.items(task), task.payload["attribute"]
    assert len(names) == 16 and task.prompt.startswith(f"{attr} 16: ")
    first_line, demo_obs = env.parallel_transcript(task).splitlines()[:2]
    assert first_line == f"+a {attr};@a 1-16"
    out = execute_turn(first_line, {}, env.call_tool, 0, Budgets(max_subagents_per_stage=16), items=names)
    assert [s.task for s in out.specs] == names and {s.instructions for s in out.specs} == {attr}
    answers = [str(env.corpus.facts[s.task][attr]) for s in out.specs]
    assert ">" + S.SEP.join(f"{out.specs[i].task} {answers[i]}" for i in out.items) == demo_obs

    roles = {"a": attr}
    one = execute_turn("@a 3;@a 15-16", roles, env.call_tool, 0, Budgets(), items=names)
    assert [s.task for s in one.specs] == [names[2], names[14], names[15]]
    # past the list: an error item, nothing runs; a bad range is a parse error
    past = execute_turn("@a 15-17", roles, env.call_tool, 0, Budgets(), items=names)
    assert past.items == ["err no item 17"] and past.specs == []
    assert execute_turn("@a 5-2", roles, env.call_tool, 0, Budgets(), items=names).items == ["err bad range"]
    assert execute_turn("@a 0", roles, env.call_tool, 0, Budgets(), items=names).items == ["err bad range"]
    # the stage budget cuts a range like a list of assignments; an unknown agent is one error
    capped = execute_turn("@a 1-4;@b 1-4", roles, env.call_tool, 0, Budgets(max_subagents_per_stage=2), items=names)
    assert capped.items == [0, 1, f"{names[2]} fail", f"{names[3]} fail", "err no agent b"]
    # two roles on one range: every role on every item
    roles["b"] = "pin"
    both = execute_turn("@a,b 1-2", roles, env.call_tool, 0, Budgets(), items=names)
    assert [(s.name, s.task) for s in both.specs] == [("a", names[0]), ("a", names[1]), ("b", names[0]), ("b", names[1])]
    # without an item list (an env whose prompt shows none), digits are the task's text
    assert [s.task for s in execute_turn("@a 1-2", roles, env.call_tool, 0, Budgets()).specs] == ["1-2"]


# ----------------------------------------------------------------------------- critical path


def _orch(stages_of_turns: list[int], subs: list[tuple[int, int]]) -> Episode:
    """An orchestrator episode: assistant turns at the given stages (each followed by a tool turn),
    and sub-agents as (stage, steps)."""
    turns = []
    for s in stages_of_turns:
        turns += [Turn("assistant", "x\n", [5, 6], [-0.1, -0.2], True, s), Turn("tool", ">y\n", [7, 8, 9], [], False, s)]
    sub_eps = [
        Episode("t/sub", "swarm/subagent", "age kob\n", [1], [Turn("assistant", "?k\n", [2])] * steps, finish_reason="stop", stage=s)
        for s, steps in subs
    ]
    return Episode("t", "swarm", "age kob tam\n", [1, 2, 3], turns, sub_episodes=sub_eps)


@pytest.mark.parametrize(
    "turn_stages, subs, critical, total",
    [
        ([0, 1, 2, 3, 4], [], 5, 5),  # serial collapse: four searches and the answer
        ([0, 1], [(0, 2), (0, 2), (0, 3)], 1 + 3 + 1, 1 + 7 + 1),  # one stage of three sub-agents
        ([0, 1, 2], [(0, 2), (0, 1), (2, 4)], (1 + 2) + 1 + (1 + 4), (1 + 3) + 1 + (1 + 4)),  # mixed
        ([0], [], 1, 1),  # answered at once
    ],
)
def test_critical_and_total_steps_of_episode_trees(turn_stages, subs, critical, total, tmp_path):
    ep = _orch(turn_stages, subs)
    assert critical_steps(stages_of(ep)) == critical and total_steps(stages_of(ep)) == total
    # the Parquet tree keeps everything the critical path needs
    back = read_parquet(write_parquet([ep], tmp_path / "e.parquet"))[0]
    assert critical_steps(stages_of(back)) == critical and total_steps(stages_of(back)) == total
    assert [s.stage for s in back.sub_episodes] == [s for s, _ in subs]


def test_oracle_serial_and_parallel_demonstrations_have_the_expected_critical_path():
    """Width 8: serial is 9 critical steps, parallel 1 + 2 + 1 = 4 (sub-agent: search, answer)."""
    env = SwarmEnv(levels=(8,))
    task = env.sample(1, np.random.default_rng(0))[0]
    serial_turns = [line for line in env.serial_transcript(task).splitlines() if not line.startswith(">")]
    assert len(serial_turns) == 9
    parallel_turns = [line for line in env.parallel_transcript(task).splitlines() if not line.startswith(">")]
    sub_turns = [line for line in env.subagent_transcript("age", task.payload["entities"][0])[1].splitlines() if not line.startswith(">")]
    ep = _orch(list(range(len(parallel_turns))), [(0, len(sub_turns))] * 8)
    assert critical_steps(stages_of(ep)) == 4 and total_steps(stages_of(ep)) == 2 + 16


# ----------------------------------------------------------------------------- on Ray


def constant_policy(tmp_path, char: str):
    """A real tiny llama whose greedy output is always `char`: every block writes nothing to the
    residual stream (o_proj, down_proj = 0), all embeddings are one vector v, and only the head
    row of `char` is v, so that logit is |v|^2 > 0 and every other logit is 0."""
    from policies.model import build_policy, save_policy
    from rl.config import PolicyConfig

    model, tok = build_policy(PolicyConfig(hidden_size=64, num_layers=1, num_heads=2, head_dim=32, intermediate_size=64, max_position_embeddings=128))
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.embed_tokens.weight.fill_(1.0)
        model.lm_head.weight.zero_()
        model.lm_head.weight[tok.convert_tokens_to_ids(char)] = 1.0
    path = tmp_path / f"const-{ord(char)}"
    save_policy(model, tok, path)
    return path


RAY_CPUS = 3  # the concurrency test runs 3 workers at once


def _spawn(n: int, path=None):
    from rl.config import PolicyConfig
    from rollout.worker import spawn_workers

    policy = PolicyConfig(hidden_size=64, num_layers=1, num_heads=2, head_dim=32, intermediate_size=64, max_position_embeddings=128, path=str(path) if path else None)
    return spawn_workers(n, policy, engine="hf", batch_size=64, cpus=1, gpus=0, torch_threads=1)


def _kill(workers):
    import ray

    for w in workers:
        ray.kill(w, no_restart=True)


GREEDY = SamplingParams(max_new_tokens=6, temperature=0.0)


def test_a_stage_of_k_subagents_takes_about_the_time_of_one(ray_session, tmp_path):
    from policies.tokenizer import load_tokenizer
    from rollout.swarm.stage import run_stage
    from rollout.transcript import line_params
    from rollout.worker import load_subagent_policy

    path = constant_policy(tmp_path, "?")
    workers = _spawn(3, path)
    try:
        load_subagent_policy(workers, str(path))
        env_spec = {"name": "swarm", "kwargs": {"levels": [2], "latency_s": 1.0}}  # every tool call sleeps 1 s
        params = line_params(load_tokenizer(path), GREEDY)
        budgets = Budgets(max_subagent_steps=1)
        specs = [SubagentSpec("a", "age", f"e{k}", stage=0) for k in range(3)]
        run_stage(workers, specs, params, budgets, env_spec, seed=0)  # warm-up: env built in each worker

        def timed(ws, sp, b=budgets):
            t0 = time.perf_counter()
            subs = run_stage(ws, sp, params, b, env_spec, seed=1)
            return time.perf_counter() - t0, subs

        one, subs1 = timed(workers, specs[:1])
        three, subs3 = timed(workers, specs)
        pooled, subs_pooled = timed(workers[:1], specs)  # the same three on one worker: their tool calls overlap in its pool
        serial, _ = timed(workers[:1], specs, Budgets(max_subagent_steps=1, tool_workers=1))  # ... or run one at a time
        for sub in subs1 + subs3 + subs_pooled:  # each made exactly one (slow) search call and ran out of steps
            assert [t.role for t in sub.turns] == ["assistant", "tool"] and sub.turns[0].text == "??????"
            assert sub.turns[1].text == ">none\n" and sub.finish_reason == "length"
        assert one >= 1.0 and serial >= 3.0
        assert three < 1.5 * one, f"3 sub-agents on 3 workers took {three:.2f}s vs {one:.2f}s for one"
        assert pooled < 1.5 * one, f"3 sub-agents on one worker took {pooled:.2f}s vs {one:.2f}s for one"
    finally:
        _kill(workers)


def test_subagents_see_only_their_instructions_and_task(ray_session, tmp_path):
    from policies.tokenizer import load_tokenizer
    from rollout.swarm.stage import run_stage
    from rollout.transcript import line_params
    from rollout.worker import load_subagent_policy

    env = SwarmEnv(levels=(4,))
    task = env.sample(1, np.random.default_rng(3))[0]
    kob, tam, ril, sut = task.payload["entities"]
    orchestrator_context = task.prompt + f"?{ril}\n>{env.corpus.record(ril)}\n"
    roles: dict[str, str] = {}
    out = execute_turn(f"+a {task.payload['attribute']};@a {kob};@a {tam}", roles, env.call_tool, 1, Budgets(), parent=task.id)
    workers = _spawn(2)
    try:
        load_subagent_policy(workers, None, _random_state())
        tok = load_tokenizer(None)
        subs = run_stage(workers, out.specs, line_params(tok, SamplingParams(max_new_tokens=8, temperature=1.0)), Budgets(), {"name": "swarm", "kwargs": {"levels": [4]}}, seed=0)
    finally:
        _kill(workers)
    attr = task.payload["attribute"]
    assert [s.prompt for s in subs] == [f"{attr} {kob}\n", f"{attr} {tam}\n"]
    for sub, other in zip(subs, (tam, kob)):
        assert tok.decode(sub.prompt_ids) == sub.prompt
        seen = sub.prompt + "".join(t.text for t in sub.turns if t.role == "tool")  # all its context but its own samples
        assert other not in seen and ril not in seen and sut not in seen and orchestrator_context not in seen
        assert sub.stage == 1 and all(not t.trainable for t in sub.turns)


def _random_state(seed: int = 0) -> dict[str, torch.Tensor]:
    from policies.model import build_policy
    from rl.config import PolicyConfig

    model, _ = build_policy(PolicyConfig(hidden_size=64, num_layers=1, num_heads=2, head_dim=32, intermediate_size=64, max_position_embeddings=128), seed=seed)
    return model.state_dict()


def test_parl_metrics_read_the_episode_trees():
    from rl.parl_metrics import parl_metrics

    serial = _orch([0, 1, 2], [])
    serial.turns[0].text, serial.turns[2].text, serial.turns[4].text = "?kob\n", "?tam;#1+2\n", "=kob 1\n"
    serial.finish_reason = "stop"
    parallel = _orch([0, 1], [(0, 2), (0, 2), (0, 3), (0, 1)])
    parallel.sub_episodes[3].finish_reason = "length"  # ran out of steps: not usable
    m = parl_metrics([serial, parallel])
    assert m["parl/critical_steps"] == (3 + (1 + 3 + 1)) / 2
    assert m["parl/total_steps"] == (3 + (1 + 8 + 1)) / 2
    assert m["parl/subagents"] == 2.0 and m["parl/usable_subagents"] == 0.75
    assert m["parl/own_tool_calls"] == 1.5 and m["parl/stages"] == 2.5 and m["parl/answered"] == 0.5
    assert parl_metrics([]) == {}


def test_a_subagent_worker_killed_mid_stage_is_recovered(ray_session, tmp_path):
    """SIGKILL a worker while its sub-agents wait on slow tool calls: the driver waits for the
    restart, reloads the frozen sub-agent policy, reruns the shard with its seed, and the stage
    returns the sub-episodes of an undisturbed one."""
    import os
    import signal
    import threading

    import ray

    from policies.tokenizer import load_tokenizer
    from rollout.swarm.stage import run_stage
    from rollout.transcript import line_params
    from rollout.worker import load_subagent_policy

    path = constant_policy(tmp_path, "?")
    workers = _spawn(2, path)
    try:
        load_subagent_policy(workers, str(path))
        env_spec = {"name": "swarm", "kwargs": {"levels": [2], "latency_s": 0.4}}  # every call sleeps 0.4 s
        params = line_params(load_tokenizer(path), SamplingParams(max_new_tokens=6, temperature=1.0))
        budgets = Budgets(max_subagent_steps=3)
        specs = [SubagentSpec("a", "age", f"e{k}", stage=0) for k in range(4)]

        def record(subs):
            return [(s.task_id, [(t.role, t.text, t.token_ids) for t in s.turns], s.finish_reason) for s in subs]

        straight = record(run_stage(workers, specs, params, budgets, env_spec, seed=3))
        pid = ray.get(workers[0].pid.remote())
        killer = threading.Timer(0.6, os.kill, (pid, signal.SIGKILL))
        killer.start()
        faulty = record(run_stage(workers, specs, params, budgets, env_spec, seed=3))
        killer.join()
        assert workers.restarts == 1 and ray.get(workers[0].pid.remote()) != pid
        assert faulty == straight and len(straight) == 4
        assert all(len([t for t in turns if t[0] == "tool"]) == 3 for _, turns, _ in straight)  # each made its 3 slow calls
    finally:
        _kill(workers)
