"""The vision env: deterministic rendering, exact answers, a real held-out split, a strict checker."""

from __future__ import annotations

import numpy as np
import pytest

from envs.registry import make_env
from envs.vision import VisionEnv
from envs.vision.answer import check, read_answer
from envs.vision.digits import pools
from envs.vision.render import decode_png
from envs.vision.scenes import KINDS, LEVELS


@pytest.fixture(scope="module")
def env():
    return VisionEnv(levels=LEVELS, eval_size=60)


def test_rendering_is_deterministic_per_seed(env):
    for kind in KINDS:
        for level in LEVELS:
            a, _ = env.make_task(kind, level, seed=17, heldout=False)
            b, _ = env.make_task(kind, level, seed=17, heldout=False)
            assert a == b
    x = env.sample(20, np.random.default_rng(5))
    y = env.sample(20, np.random.default_rng(5))
    assert [t.images for t in x] == [t.images for t in y]
    assert all(len(t.images) == 1 and t.images[0][:8] == b"\x89PNG\r\n\x1a\n" for t in x)
    z = env.sample(20, np.random.default_rng(6))
    assert [t.images for t in x] != [t.images for t in z]


def test_images_are_48x48_rgb_and_not_blank(env):
    for t in env.sample(30, np.random.default_rng(0)):
        img = np.asarray(decode_png(t.images[0]))
        assert img.shape == (48, 48, 3)
        assert (img < 200).any(), t.prompt  # something was drawn


def test_every_kind_and_level_is_sampled(env):
    seen = {(t.payload["kind"], t.payload["level"]) for t in env.sample(400, np.random.default_rng(1))}
    assert seen == {(k, lv) for k in KINDS for lv in LEVELS}


def test_count_answer_matches_the_scene(env):
    for t in env.sample(200, np.random.default_rng(2)):
        if t.payload["kind"] != "count":
            continue
        shapes = t.payload["scene"]["shapes"]
        if t.prompt == "how many shapes?":
            assert int(t.payload["answer"]) == len(shapes)
        else:
            target = t.prompt.removeprefix("how many ").removesuffix("s?")
            assert int(t.payload["answer"]) == sum(s["kind"] == target for s in shapes)


def test_heldout_split_is_disjoint_and_stable(env):
    train_ids = {t.id for t in env.sample(2000, np.random.default_rng(3))}
    held = env.eval_tasks(60)
    assert not train_ids & {t.id for t in held}
    assert [t.id for t in VisionEnv(levels=LEVELS, eval_size=60).eval_tasks(60)] == [t.id for t in held]
    kinds = [t.payload["kind"] for t in held]
    assert all(kinds.count(k) == 12 for k in KINDS)  # every kind gets an equal share


def test_heldout_digits_use_unseen_glyphs(env):
    train, heldout = pools(env.fraction)
    train_glyphs = {int(i) for v in train.values() for i in v}
    held_glyphs = {int(i) for v in heldout.values() for i in v}
    assert not train_glyphs & held_glyphs and all(len(heldout[d]) > 0 for d in range(10))
    for t in env.eval_tasks(60):
        if t.payload["kind"] == "digits":
            assert set(t.payload["scene"]["glyphs"]) <= held_glyphs
    for t in env.sample(300, np.random.default_rng(4)):
        if t.payload["kind"] == "digits":
            assert set(t.payload["scene"]["glyphs"]) <= train_glyphs


def test_oracle_passes_and_other_answers_fail(env):
    for t in env.sample(200, np.random.default_rng(7)) + env.eval_tasks(60):
        v = env.verify(t, env.oracle(t))
        assert v.passed and v.parsed and v.score == 1.0
    t = next(t for t in env.sample(50, np.random.default_rng(8)) if t.payload["kind"] == "spatial")
    wrong = "no" if t.payload["answer"] == "yes" else "yes"
    v = env.verify(t, wrong)
    assert not v.passed and v.parsed and v.score == 0.0


@pytest.mark.parametrize(
    "text,kind,expected,passed,parsed",
    [
        ("3", "count", "3", True, True),
        (" 3.\n", "count", "3", True, True),
        ("03", "digits", "3", True, True),  # numbers compare by value
        ("Red", "identify", "red", True, True),
        ("red <verify>correct</verify>", "identify", "red", True, True),  # self-verdict is not the answer
        ("4", "count", "3", False, True),
        ("blue", "identify", "red", False, True),
        ("circle", "identify", "red", False, True),  # a shape for a colour question: readable, wrong
        ("", "count", "3", False, False),
        ("three", "count", "3", False, False),
        ("3.0", "count", "3", False, False),
        ("-3", "count", "3", False, False),
        ("3 4", "count", "3", False, False),  # hedging: several candidates never parse
        ("3,4", "count", "3", False, False),
        ("red or blue", "identify", "red", False, False),
        ("red/blue", "identify", "red", False, False),
        ("yes/no", "spatial", "yes", False, False),
        ("yesno", "spatial", "yes", False, False),
        ("maybe", "spatial", "no", False, False),
        ("1" * 40, "digits", "1" * 40, False, False),  # over-long
        ("what number?", "digits", "12", False, False),  # a copied prompt
        ("\n3", "count", "3", False, False),  # only the first line counts
    ],
)
def test_answer_checker_edge_cases(text, kind, expected, passed, parsed):
    assert check(text, kind, expected) == (passed, parsed)


def test_read_answer_canonical_forms():
    assert read_answer("007", "chart") == "7"
    assert read_answer("YES", "spatial") == "yes"
    assert read_answer("purple", "spatial") is None


def test_registry_and_bad_arguments():
    assert make_env("vision", levels=(1,), eval_size=4).name == "vision"
    with pytest.raises(ValueError, match="levels"):
        VisionEnv(levels=(4,))
    with pytest.raises(ValueError, match="kinds"):
        VisionEnv(kinds=("sudoku",))
