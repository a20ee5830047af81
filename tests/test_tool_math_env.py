"""The `tool_math` env: problems, the held-out split, the verifier (adversarial answers too), the
demonstrations, and the `python` tool in the real sandbox, including calls that try to escape it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from envs.registry import env_kwargs, make_env
from envs.tool_math import ToolMathEnv
from envs.tool_math.generator import draw
from envs.tool_math.python_tool import program
from rl.config import ConfigError, load_config

EXP = Path(__file__).resolve().parents[1] / "experiments" / "tool_math.yaml"


def _task(env=None, level=3, seed=0):
    env = env or ToolMathEnv(levels=(level,))
    return env, env.sample(1, np.random.default_rng(seed))[0]


@pytest.mark.parametrize("level, digits", [(1, (2, 2)), (2, (3, 2)), (3, (3, 3))])
def test_levels_have_the_operand_widths_they_claim(level, digits):
    rng = np.random.default_rng(0)
    for _ in range(200):
        expr, value = draw(level, rng)
        a, b = expr.split("*")
        assert (len(a), len(b)) == digits and int(a) * int(b) == value


def test_level_4_adds_a_term():
    rng = np.random.default_rng(0)
    for _ in range(200):
        expr, value = draw(4, rng)
        product, c = expr.split("+")
        a, b = product.split("*")
        assert int(a) * int(b) + int(c) == value


def test_train_and_heldout_tasks_are_disjoint():
    env = ToolMathEnv(levels=(1,), eval_size=64)
    held = {t.prompt for t in env.eval_tasks()}
    train = {t.prompt for t in env.sample(3000, np.random.default_rng(0))}
    assert held and not held & train
    assert [t.prompt for t in env.eval_tasks(8)] == [t.prompt for t in env.eval_tasks(8)]


@pytest.mark.parametrize(
    "completion, passed, parsed",
    [
        ("=ANSWER\n", True, True),
        ("$EXPR\n=ANSWER\n", True, True),
        ("=ANSWER\n<verify>p=0.9</verify>", True, True),  # the verdict tag is not part of the answer
        ("=0ANSWER\n", True, True),  # leading zero: same integer
        ("=WRONG\n", False, True),
        ("$EXPR\n", False, False),  # a tool call alone is no answer
        ("ANSWER\n", False, False),  # no answer action
        ("=EXPR\n", False, False),  # an expression is not an answer: the policy must not hand in work to evaluate
        ("=ANSWER.0\n", False, False),
        ("=ANSWER;=WRONG\n", False, True),  # the last answer counts
        ("= \n", False, False),
    ],
)
def test_verify(completion, passed, parsed):
    env, task = _task()
    answer, expr = task.payload["answer"], task.payload["expression"]
    text = completion.replace("ANSWER", answer).replace("WRONG", str(int(answer) + 1)).replace("EXPR", expr)
    v = env.verify(task, text)
    assert (v.passed, v.parsed) == (passed, parsed)


def test_the_tool_result_in_an_observation_is_not_an_answer():
    """The completion is the policy's own turns: a transcript whose only copy of the result is the
    observation line does not pass (`Episode.completion_text` leaves observations out)."""
    env, task = _task()
    assert not env.verify(task, f"${task.payload['expression']}\n").parsed


def test_demonstrations_mix_tool_calls_and_direct_answers():
    env = ToolMathEnv(levels=(2,), tool_fraction=0.3)
    demos = env.demonstrations(1000, np.random.default_rng(0))
    with_tool = [d for d in demos if d["completion"].startswith("$")]
    assert 0.25 < len(with_tool) / len(demos) < 0.35
    for d in demos:
        assert "".join(text for text, _ in d["segments"]) == d["completion"]
        for text, trainable in d["segments"]:
            assert trainable == (not text.startswith(">"))  # observations are never trained on
    d = with_tool[0]
    expr, answer = d["prompt"].rstrip("=\n"), str(eval(d["prompt"].rstrip("=\n")))  # noqa: S307 (our own generator's text)
    assert d["completion"] == f"${expr}\n>{answer}\n={answer}\n"


def test_without_tools_nothing_calls_one():
    env = ToolMathEnv(levels=(2,), tools=(), tool_fraction=0.9)
    assert not any(d["completion"].startswith("$") for d in env.demonstrations(200, np.random.default_rng(0)))
    _, task = _task(env)
    assert env.step(task, "$2*3").observation == "err no tool"


def test_python_tool_runs_code():
    env, task = _task()
    assert env.step(task, f"${task.payload['expression']}").observation == task.payload["answer"]
    assert env.step(task, "$print(6*7)").observation == "42"
    assert env.step(task, "$1/0").observation == "err ZeroDivisionError"
    assert env.step(task, "$x x").observation == "err SyntaxError"
    assert env.step(task, "$" + "1+" * 150 + "1").observation == "err too long"
    assert env.step(task, f"={task.payload['answer']}").answer == task.payload["answer"]
    assert env.step(task, "$'a' * 3").observation == "'aaa'"
    assert program("import os") == "import os\n"


def test_python_tool_is_contained(tmp_path):
    """Model-written code: the network is unreachable, nothing outside the scratch dir is
    writable, a fork bomb and a memory hog are killed; each is a tool error, never a crash."""
    env, task = _task(ToolMathEnv(levels=(1,), timeout_s=2.0, memory_mb=128))
    target = tmp_path / "escaped"
    calls = {
        "network": "$__import__('socket').create_connection(('1.1.1.1', 53), timeout=1)",
        "write": f"$open('{target}', 'w').write('x')",
        "fork": "$[__import__('os').fork() for _ in iter(int, 1)]",
        "memory": "$len(bytearray(1 << 30))",
        "sleep": "$__import__('time').sleep(30)",
    }
    for name, call in calls.items():
        obs = env.step(task, call).observation
        assert obs.startswith("err"), f"{name}: {obs}"
    assert not target.exists()
    assert env.step(task, "$__import__('os').getuid()").observation != str(os.getuid())


def test_tool_math_config_and_errors():
    cfg = load_config(EXP)
    env = make_env("tool_math", **env_kwargs(cfg))
    assert env.tools == ("python",) and env.tool_fraction == cfg.env.tool_fraction
    no_tool = load_config(EXP, ["env.tools=[]"])
    assert make_env("tool_math", **env_kwargs(no_tool)).tools == ()
    for overrides, says in [
        (["env.tools=[shell]"], "env.tools"),
        (["env.name=math", "env.levels=[1]"], "env.tools is for env tool_math"),
        (["agent.max_total_tokens=200"], "agent.max_total_tokens (200) exceeds policy.max_position_embeddings"),
        (["rollout.max_new_tokens=64"], "must be below agent.max_total_tokens"),
        (["policy.chat_template=true"], "env 'tool_math' builds its own transcripts"),
    ]:
        with pytest.raises(ConfigError, match=says.replace("(", r"\(").replace(")", r"\)")):
            load_config(EXP, overrides)

