"""Training tasks re-weighted by level: exact mix, determinism, held-out untouched, config errors."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from envs.math.env import MathEnv
from rl.config import ConfigError, validate_config
from rl.task_sampling import sample_tasks


def levels_of(tasks):
    return Counter(t.payload["level"] for t in tasks)


def test_no_weights_is_the_envs_own_sampler():
    env = MathEnv(levels=(1, 2, 3))
    a = sample_tasks(env, 64, np.random.default_rng(5))
    b = env.sample(64, np.random.default_rng(5))
    assert [t.id for t in a] == [t.id for t in b]


def test_weights_set_the_level_mix():
    env = MathEnv(levels=(1, 2, 3))
    tasks = sample_tasks(env, 6000, np.random.default_rng(0), {1: 0.25})
    counts = levels_of(tasks)
    assert len(tasks) == 6000
    # expected shares 0.25 : 1 : 1 -> 1/9, 4/9, 4/9; binomial SE on 6000 draws is under 0.007
    assert counts[1] / 6000 == pytest.approx(1 / 9, abs=0.025)
    assert counts[2] / 6000 == pytest.approx(4 / 9, abs=0.03)
    assert counts[3] / 6000 == pytest.approx(4 / 9, abs=0.03)


def test_zero_weight_level_is_never_trained_on_and_heldout_stays_out():
    env = MathEnv(levels=(1, 2, 3))
    tasks = sample_tasks(env, 2000, np.random.default_rng(1), {1: 0.0, 3: 2.0})
    counts = levels_of(tasks)
    assert counts[1] == 0
    assert counts[3] / 2000 == pytest.approx(2 / 3, abs=0.04)
    assert not any(env.is_heldout(t.prompt) for t in tasks)
    # the held-out split is the env's, whatever the training weights
    assert levels_of(env.eval_tasks(256))[1] > 0


def test_same_rng_same_tasks():
    env = MathEnv(levels=(1, 2, 3))
    draw = lambda: [t.id for t in sample_tasks(env, 100, np.random.default_rng([7, 3]), {1: 0.1, 2: 0.5})]
    assert draw() == draw()


@pytest.mark.parametrize(
    "weights, message",
    [
        ({4: 1.0}, r"level\(s\) \[4\] that are not in levels"),
        ({1: -1.0}, "must be >= 0"),
        ({1: 0, 2: 0, 3: 0}, "every level weight 0"),
    ],
)
def test_bad_weights_are_config_errors(weights, message):
    with pytest.raises(ConfigError, match=message):
        validate_config({"policy": {}, "env": {"name": "math", "levels": [1, 2, 3], "level_weights": weights}})


def test_level_weights_do_not_invalidate_the_sft_cache():
    base = {"policy": {}, "env": {"name": "math", "levels": [1, 2, 3]}}
    plain = validate_config(base)
    weighted = validate_config({**base, "env": {**base["env"], "level_weights": {1: 0.25}}})
    other_levels = validate_config({**base, "env": {"name": "math", "levels": [1, 2]}})
    assert weighted.sft_fingerprint() == plain.sft_fingerprint()
    assert other_levels.sft_fingerprint() != plain.sft_fingerprint()
