"""The policy's verdict on its own answer (`<verify>...</verify>`, read by the self_verification
reward) is never part of the graded answer: in every env, answer + closing tag grades exactly as
the answer alone, and a tag is only a verdict where it closes the completion."""

from __future__ import annotations

import numpy as np
import pytest

from envs.base import strip_self_verdict
from envs.registry import make_env

TAGS = ["<verify>p=0.8</verify>", " <verify>correct</verify>", "\n<verify>incorrect</verify>\n", "<VERIFY>p=.3</VERIFY>  "]


@pytest.mark.parametrize(
    "text, stripped",
    [
        ("+0059<verify>p=0.8</verify>", "+0059"),
        ("+0059 <verify>p=0.8</verify>\n", "+0059"),
        ("+0059", "+0059"),
        ("<verify>p=1</verify>+0059", "<verify>p=1</verify>+0059"),  # not closing: not a verdict
        # two tags: only the closing one goes, the text between them stays (and is graded as it is)
        ("+0059<verify>p=1</verify>+0060<verify>p=1</verify>", "+0059<verify>p=1</verify>+0060"),
        ("+0059<verify>p=1", "+0059<verify>p=1"),  # unclosed: untouched
    ],
)
def test_strip_takes_only_the_closing_tag(text, stripped):
    assert strip_self_verdict(text) == stripped


def _verdict_fields(v):
    return (v.passed, v.score, v.parsed)


@pytest.mark.parametrize("name, kwargs", [("math", {"levels": (1, 2, 3)}), ("math", {"levels": (1, 2, 3), "fixed_width": True}), ("swarm", {"levels": (2, 3)})])
def test_a_closing_tag_never_changes_the_grade(name, kwargs):
    env = make_env(name, **kwargs)
    tasks = env.sample(24, np.random.default_rng(0))
    for task in tasks:
        right = env.oracle(task)
        for answer in (right, right + "9", right[:-1], "", "garbage"):  # right, wrong (some partly), unreadable
            base = env.verify(task, answer)
            for tag in TAGS:
                assert _verdict_fields(env.verify(task, answer + tag)) == _verdict_fields(base), (task.prompt, answer, tag)
        assert env.verify(task, right + TAGS[0]).passed


def test_math_a_tag_before_the_answer_is_not_stripped_into_a_pass():
    env = make_env("math", levels=(1,))
    task = env.sample(1, np.random.default_rng(0))[0]
    assert not env.verify(task, "<verify>p=1</verify>" + env.oracle(task)).passed


@pytest.mark.slow
def test_code_a_closing_tag_is_not_python():
    env = make_env("code", levels=(1,))
    task = env.sample(1, np.random.default_rng(0))[0]
    good = env.oracle(task)
    assert env.verify(task, good + "\n<verify>p=0.9</verify>").passed
    assert env.verify(task, good + "<verify>correct</verify>").passed
