"""The turn loop every agent episode runs (`rollout.turn_loop`), driven by a scripted policy.

A scripted policy answers each transcript with a fixed line (`Script`), so every path of the loop
is reached on purpose: a tool call, a malformed line, a tool that times out, the tool-call and
turn budgets, the final answer. The same scripts run against the `tool_math` env (python tool in
the real sandbox) and the `swarm` env (search tool) through the same code (`rollout.tool_rollout.play`);
PARL sub-agents run the same loop (`rollout.swarm.subagent`).
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from envs.swarm import SwarmEnv
from envs.tool_math import ToolMathEnv
from policies.tokenizer import load_tokenizer
from rl.batch import build_batch
from rollout.engines.base import Completion, SamplingParams
from rollout.episode import Episode
from rollout.swarm.budgets import Budgets
from rollout.swarm.subagent import SubagentSpec, run_subagents
from rollout.tool_rollout import NO_CALLS_LEFT, ToolBudgets, play
from rollout.transcript import encode, transcript_ids
from rollout.turn_loop import TIMEOUT_OBSERVATION

TOK = load_tokenizer(None)


class Script:
    """generate(prompts, round): the line `lines[transcript]` for each prompt (`?` when unscripted);
    records the rounds in which each transcript was asked for."""

    def __init__(self, lines: dict[str, str], version: int = 7):
        self.lines, self.version, self.asked = lines, version, []

    def __call__(self, prompts, round_):
        out = []
        for p in prompts:
            text = TOK.decode(p)
            self.asked.append((round_, text, time.monotonic()))
            ids = encode(TOK, self.lines.get(text, "?"))
            out.append(Completion(token_ids=ids, logprobs=[-0.5] * len(ids), finish_reason="stop", policy_version=self.version))
        return out


def _episodes(tasks):
    return [Episode(task_id=t.id, env=t.env, prompt=t.prompt, prompt_ids=encode(TOK, t.prompt), turns=[]) for t in tasks]


def _play(env, tasks, lines, **budgets):
    script = Script(lines)
    episodes = _episodes(tasks)
    play(env, episodes, tasks, script, TOK, 16, ToolBudgets(**{"max_total_tokens": 128, **budgets}))
    return episodes, script


def _tool_math_case():
    env = ToolMathEnv(levels=(1,), timeout_s=1.0)
    task = env.sample(1, np.random.default_rng(0))[0]
    expr, answer = task.payload["expression"], task.payload["answer"]
    return env, task, f"${expr}\n", answer, answer


def _swarm_case():
    env = SwarmEnv(levels=(1,))
    task = env.sample(1, np.random.default_rng(0))[0]
    name = task.payload["entities"][0]
    value = str(task.payload["answer"][name])
    return env, task, f"?{name}\n", env.corpus.record(name), f"{name} {value}"


CASES = {"tool_math": _tool_math_case, "swarm": _swarm_case}


@pytest.mark.parametrize("case", CASES)
def test_tool_call_then_final_answer(case):
    env, task, call, result, answer = CASES[case]()
    p = task.prompt
    (ep,), _ = _play(env, [task], {p: call, p + call + f">{result}\n": f"={answer}\n"})
    assert [(t.role, t.text, t.trainable) for t in ep.turns] == [
        ("assistant", call, True),
        ("tool", f">{result}\n", False),
        ("assistant", f"={answer}\n", True),
    ]
    assert ep.finish_reason == "stop" and env.verify(task, ep.completion_text).passed
    assert [t.stage for t in ep.turns] == [0, 0, 1]
    assert ep.policy_version == 7 and all(t.policy_version == 7 for t in ep.turns if t.role == "assistant")


@pytest.mark.parametrize("case", CASES)
def test_malformed_line_is_an_error_observation_and_the_episode_goes_on(case):
    env, task, _, _, answer = CASES[case]()
    p = task.prompt
    (ep,), _ = _play(env, [task], {p: "hello\n", p + "hello\n>err unknown action\n": f"={answer}\n"})
    assert [t.text for t in ep.turns] == ["hello\n", ">err unknown action\n", f"={answer}\n"]
    assert ep.finish_reason == "stop" and env.verify(task, ep.completion_text).passed


@pytest.mark.parametrize("case", CASES)
def test_tool_call_budget_then_turn_budget(case):
    env, task, call, result, _ = CASES[case]()
    p = task.prompt
    t1 = p + call + f">{result}\n"
    t2 = t1 + call + f">{NO_CALLS_LEFT}\n"
    (ep,), script = _play(env, [task], {p: call, t1: call, t2: call}, max_tool_calls=1, max_turns=3)
    assert [t.text for t in ep.turns] == [call, f">{result}\n", call, f">{NO_CALLS_LEFT}\n", call, f">{NO_CALLS_LEFT}\n"]
    assert ep.finish_reason == "length" and not env.verify(task, ep.completion_text).parsed
    assert len(script.asked) == 3  # never asked for a fourth turn


def test_transcript_budget_ends_the_episode_before_generating():
    env, task, call, result, _ = _tool_math_case()
    cap = len(encode(TOK, task.prompt + call)) + 16 + 1  # room for one more 16-token turn, not after the observation
    (ep,), script = _play(env, [task], {task.prompt: call}, max_total_tokens=cap)
    assert ep.finish_reason == "length" and len(script.asked) == 1
    assert len(transcript_ids(ep)) <= cap


def test_python_tool_timeout_is_an_observation():
    env, task, _, _, answer = _tool_math_case()  # the sandbox kills a program at 1 s
    call = "$__import__('time').sleep(5)\n"
    p = task.prompt
    (ep,), _ = _play(env, [task], {p: call, p + call + ">err timeout\n": f"={answer}\n"})
    assert [t.text for t in ep.turns][1:] == [">err timeout\n", f"={answer}\n"] and ep.finish_reason == "stop"


def test_a_slow_tool_call_holds_back_only_its_own_episode():
    """Two episodes: one calls a tool that takes 3 s (past the loop's 1 s tool timeout), the other
    makes two quick calls and answers. The quick one finishes while the slow call is pending; the
    slow one gets `err timeout` at about 1 s and answers; the whole batch takes ~1 s, not 3."""
    env = SwarmEnv(levels=(1,))
    tasks = env.sample(2, np.random.default_rng(1))
    slow_name, fast_name = tasks[0].payload["entities"][0], tasks[1].payload["entities"][0]

    class SlowFirst(SwarmEnv):
        def call_tool(self, tool, arg):
            if arg == slow_name:
                time.sleep(3.0)
            return super().call_tool(tool, arg)

    env = SlowFirst(levels=(1,))
    slow, fast = tasks[0].prompt, tasks[1].prompt
    rec = env.corpus.record(fast_name)
    lines = {
        slow: f"?{slow_name}\n",
        slow + f"?{slow_name}\n>{TIMEOUT_OBSERVATION}\n": "=x 1\n",
        fast: f"?{fast_name}\n",
        fast + f"?{fast_name}\n>{rec}\n": "?zzz\n",
        fast + f"?{fast_name}\n>{rec}\n?zzz\n>none\n": "=y 2\n",
    }
    t0 = time.monotonic()
    (a, b), script = _play(env, tasks, lines, tool_timeout_s=1.0, lockstep_s=0.05, max_tool_calls=3)
    wall = time.monotonic() - t0
    assert [t.text for t in a.turns] == [f"?{slow_name}\n", f">{TIMEOUT_OBSERVATION}\n", "=x 1\n"]
    assert [t.text for t in b.turns][-1] == "=y 2\n" and a.finish_reason == b.finish_reason == "stop"
    fast_done = max(at for _, text, at in script.asked if text.startswith(fast))
    slow_resumed = max(at for _, text, at in script.asked if text.startswith(slow))
    assert fast_done - t0 < 0.8, "the quick episode waited for the slow tool call"
    assert 0.9 < slow_resumed - t0 < 2.0 and wall < 2.5


def test_identical_calls_of_one_task_run_once():
    env, task, call, result, answer = _tool_math_case()
    runs = []
    original = env.call_tool
    lock = threading.Lock()

    def counted(tool, arg):
        with lock:
            runs.append(arg)
        return original(tool, arg)

    env.call_tool = counted
    p = task.prompt
    eps, _ = _play(env, [task] * 4, {p: call, p + call + f">{result}\n": f"={answer}\n"})
    assert len(runs) == 1 and all(e.finish_reason == "stop" for e in eps)


def test_observation_tokens_are_out_of_the_loss():
    env, task, call, result, answer = _tool_math_case()
    p = task.prompt
    (ep,), _ = _play(env, [task], {p: call, p + call + f">{result}\n": f"={answer}\n"})
    batch = build_batch([ep], [1.0], TOK.pad_token_id)
    mask = batch.completion_mask[0]
    # position j predicts token j+1: the mask is on exactly the policy's own tokens
    trained = [TOK.decode([int(batch.input_ids[0, j + 1])]) for j in range(mask.numel()) if mask[j] > 0]
    assert "".join(trained) == call + f"={answer}\n"
    assert mask.sum().item() == len(ep.completion_ids)


def test_subagents_run_the_same_loop():
    """PARL sub-agents: a search, then the answer (usable), a malformed line then nothing (out of
    steps), each through `run_turns` with the frozen engine."""
    env = SwarmEnv(levels=(2,))
    task = env.sample(1, np.random.default_rng(2))[0]
    attr = task.payload["attribute"]
    kob, tam = task.payload["entities"]
    rec, value = env.corpus.record(kob), task.payload["answer"][kob]
    script = Script({f"{attr} {kob}\n": f"?{kob}\n", f"{attr} {kob}\n?{kob}\n>{rec}\n": f"={value}\n", f"{attr} {tam}\n": "oops\n"})

    class Engine:
        def generate(self, prompts, params, seed):
            return script(prompts, seed)

    specs = [SubagentSpec("a", attr, kob, stage=1), SubagentSpec("a", attr, tam, stage=1)]
    subs = run_subagents(Engine(), TOK, env.call_tool, specs, SamplingParams(max_new_tokens=16), Budgets(max_subagent_steps=2), seed=0)
    assert subs[0].finish_reason == "stop" and subs[0].verdict == {"usable": True, "answer": str(value)}
    assert [t.text for t in subs[1].turns] == ["oops\n", ">err unknown action\n", "?", ">err empty tool arg\n"]
    assert subs[1].finish_reason == "length" and not subs[1].verdict["usable"]
    assert all(not t.trainable for s in subs for t in s.turns)


def test_time_queued_behind_other_calls_does_not_count_toward_the_timeout():
    """One tool thread, three episodes whose calls take 0.6 s each, a 1 s timeout: the third call
    waits 1.2 s for the thread, then runs 0.6 s, and is not timed out."""

    class Slow(SwarmEnv):
        def call_tool(self, tool, arg):
            time.sleep(0.6)
            return super().call_tool(tool, arg)

    env = Slow(levels=(1,))
    tasks = env.sample(3, np.random.default_rng(4))
    lines = {}
    for t in tasks:
        name = t.payload["entities"][0]
        lines[t.prompt] = f"?{name}\n"
        lines[t.prompt + f"?{name}\n>{env.corpus.record(name)}\n"] = "=done 1\n"
    eps, _ = _play(env, tasks, lines, tool_timeout_s=1.0, lockstep_s=0.05, tool_workers=1)
    assert all(e.finish_reason == "stop" and TIMEOUT_OBSERVATION not in "".join(t.text for t in e.turns) for e in eps)


def test_subagent_tool_calls_overlap_and_time_out():
    """A stage's sub-agents on one worker wait for their (slow) searches side by side, in the
    worker's tool pool; a call past `tool_timeout_s` is `err timeout` and the sub-agent goes on."""
    env = SwarmEnv(levels=(8,), latency_s=0.4)
    task = env.sample(1, np.random.default_rng(5))[0]
    attr, names = task.payload["attribute"], task.payload["entities"]
    script = Script({f"{attr} {n}\n": f"?{n}\n" for n in names})

    class Engine:
        def generate(self, prompts, params, seed):
            return script(prompts, seed)

    specs = [SubagentSpec("a", attr, n, stage=0) for n in names]
    params = SamplingParams(max_new_tokens=16)

    def timed(budgets):
        t0 = time.perf_counter()
        subs = run_subagents(Engine(), TOK, env.call_tool, specs, params, budgets, seed=0)
        return time.perf_counter() - t0, subs

    side_by_side, subs = timed(Budgets(max_subagent_steps=1, tool_workers=8))
    assert [s.turns[1].text for s in subs] == [f">{env.corpus.record(n)}\n" for n in names]
    one_at_a_time, _ = timed(Budgets(max_subagent_steps=1, tool_workers=1))
    assert side_by_side < 2 * 0.4 and one_at_a_time >= 8 * 0.4
    late, subs = timed(Budgets(max_subagent_steps=2, tool_workers=8, tool_timeout_s=0.1, lockstep_s=0.05))
    assert all(s.turns[1].text == f">{TIMEOUT_OBSERVATION}\n" and len(s.turns) == 4 for s in subs)  # went on to a second turn
    assert late < 2 * 0.4


def test_an_orchestrator_observation_waits_for_its_own_tool_calls():
    """`observation_when_done`: the turn's items in order once its running calls finish; a call
    that raised is an `err` item; with nothing running, the Step at once."""
    from concurrent.futures import ThreadPoolExecutor

    from rollout.swarm.runtime import observation_when_done

    assert observation_when_done(["kob 42", "ok"]).observation == "kob 42;ok"
    gate = threading.Event()
    with ThreadPoolExecutor(2) as pool:
        slow = pool.submit(lambda: gate.wait(5) and "age 42 pin 17")
        bad = pool.submit(lambda: 1 / 0)
        out = observation_when_done(["kob 42", slow, bad])
        assert not out.done() and out.running()  # running: the turn loop's timeout counts from now
        gate.set()
        assert out.result(timeout=5).observation == "kob 42;age 42 pin 17;err ZeroDivisionError"
