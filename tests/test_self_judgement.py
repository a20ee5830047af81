"""Evaluation of the policy's verdicts on its own answers, against hand-computed cases."""

from __future__ import annotations

import math

import pytest

from rl.self_judgement import best_of_k, expected_calibration_error, reliability_bins, self_judgement_metrics


def test_reliability_bins_by_hand():
    ps = [0.05, 0.1, 0.15, 0.55, 0.95, 1.0, None, 0.99]
    ys = [False, False, True, True, True, True, True, False]
    bins = reliability_bins(ps, ys, n_bins=4)  # [0, .25) [.25, .5) [.5, .75) [.75, 1]
    assert [b["count"] for b in bins] == [3, 0, 1, 3]  # the missing verdict is left out; p = 1 in the last bin
    assert bins[0]["mean_p"] == pytest.approx(0.1) and bins[0]["pass_rate"] == pytest.approx(1 / 3)
    assert math.isnan(bins[1]["mean_p"]) and math.isnan(bins[1]["pass_rate"])
    assert bins[2]["mean_p"] == pytest.approx(0.55) and bins[2]["pass_rate"] == 1.0
    assert bins[3]["mean_p"] == pytest.approx((0.95 + 1.0 + 0.99) / 3) and bins[3]["pass_rate"] == pytest.approx(2 / 3)
    ece = (3 * abs(0.1 - 1 / 3) + 1 * abs(0.55 - 1) + 3 * abs(0.98 - 2 / 3)) / 7
    assert expected_calibration_error(bins) == pytest.approx(ece)
    assert math.isnan(expected_calibration_error(reliability_bins([None], [True])))


def test_a_calibrated_forecast_lies_on_the_diagonal():
    ps = [0.25] * 4 + [0.75] * 4
    ys = [True, False, False, False, True, True, True, False]
    assert expected_calibration_error(reliability_bins(ps, ys)) == 0.0


def test_best_of_k_by_hand():
    ps = [[0.2, 0.9, 0.5], [None, 0.1, 0.1], [0.7, 0.7, None], [None, None, None]]
    ys = [[False, True, False], [True, False, True], [False, True, True], [True, False, False]]
    m = best_of_k(ps, ys, seed=0)
    # task 0: 0.9 → pass; task 1: 0.1 twice → the first of them (sample 1) → fail; task 2: 0.7 twice →
    # sample 0 → fail; task 3: no verdicts → the first sample → pass
    assert m["best_of_k"] == pytest.approx(2 / 4)
    assert m["pass_at_1"] == pytest.approx((1 / 3 + 2 / 3 + 2 / 3 + 1 / 3) / 4)
    assert m["k"] == 3.0
    assert m["gain"] == pytest.approx(m["best_of_k"] - m["random_pick"])
    # the random pick is seeded: the same seed, the same picks
    assert best_of_k(ps, ys, seed=0) == m
    with pytest.raises(ValueError):
        best_of_k([[0.1]], [[True, False]])


def test_a_judging_policy_beats_a_random_pick():
    # 200 tasks x 4 samples: one right answer per task; the policy states 0.9 on the right one
    ps = [[0.9 if j == i % 4 else 0.2 for j in range(4)] for i in range(200)]
    ys = [[j == i % 4 for j in range(4)] for i in range(200)]
    m = best_of_k(ps, ys, seed=1)
    assert m["best_of_k"] == 1.0 and m["pass_at_1"] == 0.25
    assert m["gain"] > 2 * m["gain_se"] > 0


def test_metrics_within_each_level_and_only_with_verdicts():
    # level 1: verdicts separate perfectly; level 2: verdicts are backwards
    ps = [0.9, 0.1, 0.9, 0.1, 0.2, 0.8, 0.2, 0.8]
    ys = [True, False, True, False, True, False, True, False]
    levels = [1, 1, 1, 1, 2, 2, 2, 2]  # pooled: 3 of 4 (pass, fail) pairs ordered right
    m = self_judgement_metrics(ps, ys, levels, samples=2)
    assert m["eval/self_verify/auroc_level1"] == 1.0 and m["eval/self_verify/auroc_level2"] == 0.0
    assert m["eval/self_verify/auroc"] == 0.75 and m["eval/self_verify/parsed"] == 1.0
    assert m["eval/self_verify/brier_constant"] == 0.25  # half of them pass
    assert m["eval/self_verify/best_of_k"] == 0.5 and m["eval/self_verify/k"] == 2.0  # right in level 1, wrong in level 2
    assert "eval/self_verify/best_of_k" not in self_judgement_metrics(ps, ys, levels, samples=1)
    assert self_judgement_metrics([None] * 8, ys, levels, samples=2) == {}


def test_the_reliability_diagram_goes_to_mlflow(tmp_path):
    from PIL import Image

    from rl.self_judgement import log_reliability_diagram
    from rl.tracking import Tracker, default_uri

    (tmp_path / "run").mkdir()
    tracker = Tracker(default_uri(tmp_path), "sv", tmp_path / "run", "r", {}, artifact_root=tmp_path)
    ps, ys = [0.1, 0.4, 0.9, None], [False, True, True, False]
    path = log_reliability_diagram(tracker, tmp_path / "run", ps, ys, step=25)
    assert path == tmp_path / "run" / "calibration" / "eval_step_000025.png"
    assert Image.open(path).size[0] > 200
    assert [a.path for a in tracker.client.list_artifacts(tracker.run_id, "calibration")] == ["calibration/eval_step_000025.png"]
    assert log_reliability_diagram(tracker, tmp_path / "run", [None, None], [True, False], step=50) is None  # no verdicts: no diagram
