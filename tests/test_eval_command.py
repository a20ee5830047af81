"""`swarmrl eval`: the trainer's held-out evaluation on demand.

The end-to-end test trains a tiny run (two RL steps, evaluating a weight average) and evaluates
its directory afterwards: the figures must be those the trainer wrote to `summary.json`, exactly,
since the tasks, seed, workers, sampling and weights are the same.
"""

from __future__ import annotations

import json
from math import comb
from pathlib import Path

import pytest

from rl.cli import main
from rl.config import load_config, to_yaml, validate_config
from rl.eval_command import format_report, ks_up_to, pass_at_k, pass_at_k_table, resolve_model_folder

# A random-init policy on a file of problems whose grader scores a checksum of the whole completion
# (0, 1/4, ... 1; passed at 1, about one completion in five): the pass rate is far from 0 without
# any training, and every sampled completion has to come out the same for the figures to agree.
# The learning rates are high enough for the weights to matter: on this run the initial, the
# trained and the averaged weights measure three different pass rates.
TINY = """
run: {{name: evaltiny, seed: 3, runs_dir: {runs}}}
cluster: {{num_cpus: 2}}
policy: {{hidden_size: 64, num_layers: 2, num_heads: 2, head_dim: 32, intermediate_size: 128, max_position_embeddings: 32}}
sft: {{enabled: false}}
env: {{name: dataset, path: {rows}, verifier: "{grader}:grade", level_key: level, levels: [1, 2], eval_size: 16, heldout_fraction: 0.25}}
rollout: {{group_size: 4, max_new_tokens: 4}}
algorithm: {{dynamic_sampling: false}}
optimizer: {{lr: 0.05, adamw_lr: 0.02, warmup_steps: 1}}
train: {{steps: 2, tasks_per_step: 4, eval_every: 0, eval_samples: 2, eval_ema: 0.5}}
tracking: {{progress: false}}
checkpoint: {{every: 0}}
"""

GRADER = """
def grade(completion, row):
    return (sum(map(ord, completion)) % 5) / 4
"""


def tiny_experiment(tmp_path: Path) -> Path:
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"question": f"{a}+{b}=", "answer": a + b, "level": 1 + (a + b > 9)}) + "\n" for a in range(10) for b in range(10)))
    grader = tmp_path / "grader.py"
    grader.write_text(GRADER)
    exp = tmp_path / "tiny.yaml"
    exp.write_text(TINY.format(runs=tmp_path / "runs", rows=rows, grader=grader))
    return exp


def test_pass_at_k_is_the_unbiased_estimator():
    assert pass_at_k(4, 2, 1) == 0.5
    assert pass_at_k(4, 2, 2) == pytest.approx(1 - comb(2, 2) / comb(4, 2))
    assert pass_at_k(4, 0, 4) == 0.0 and pass_at_k(4, 1, 4) == 1.0
    with pytest.raises(ValueError):
        pass_at_k(2, 1, 3)
    assert ks_up_to(1) == [1] and ks_up_to(4) == [1, 2, 4] and ks_up_to(6) == [1, 2, 4, 6]
    # task 0: 1 of 4 passed, task 1: 4 of 4; pass@1 is the mean of all samples
    table = pass_at_k_table([[True, False, False, False], [True] * 4])
    assert table[1] == pytest.approx((0.25 + 1) / 2)
    assert table[2] == pytest.approx((0.5 + 1) / 2)
    assert table[4] == 1.0


def test_report_table_names_the_settings_and_figures():
    report = {
        "target": "runs/x", "weights": "average", "step": 40, "env": "math", "seed": 7777777, "samples": 2, "workers": 1,
        "tasks": 16, "temperature": 1.0, "pass_at_k": {"1": 0.25, "2": 0.375},
        "metrics": {"eval/pass_at_1": 0.25, "eval/pass_at_1_level10": 0.0, "eval/pass_at_1_level2": 0.5, "eval/pass_at_1_kind_add": 0.125, "eval/score": 0.4},
    }
    text = format_report(report)
    assert "runs/x (step 40, average weights)" in text
    for expected in ("seed         7777777", "samples      2", "workers      1", "tasks        16", " 25.00%", "kind add", "pass@2", "37.50%", "mean score"):
        assert expected in text, expected
    assert text.index("level 2") < text.index("level 10") and text.count("pass@1") == 1


def test_bad_targets_exit_2_with_one_message(tmp_path, capsys):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    cases = [
        (["eval", str(tmp_path / "nothing")], "neither a run directory"),
        (["eval", str(model_dir)], "give an experiment YAML"),
        (["eval", str(model_dir), "experiments/quickstart.yaml", "--step", "3"], "--step chooses a checkpoint of a run directory"),
        (["eval", str(model_dir), "experiments/quickstart.yaml", "--samples", "0"], "--samples must be at least 1"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        assert message in capsys.readouterr().err, argv


def test_an_override_right_after_a_run_dir_is_an_override(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(to_yaml(validate_config({"policy": {}, "env": {"name": "math"}})))
    assert main(["eval", str(run_dir), "train.eval_samples=4", "--samples", "2"]) == 2
    assert "no checkpoints" in capsys.readouterr().err  # not "train.eval_samples=4: no such experiment file"


def test_a_model_folder_is_served_as_is_on_the_experiments_env(tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps({"model_type": "llama", "max_position_embeddings": 48}))
    exp = tmp_path / "exp.yaml"
    exp.write_text("policy: {}\nenv: {name: math, eval_size: 8}\nsft: {enabled: true}\n")
    target = resolve_model_folder(model_dir, exp, ["rollout.num_workers=2"])
    cfg = target.cfg
    assert (cfg.policy.path, cfg.sft.enabled, cfg.rollout.num_workers, cfg.env.eval_size) == (str(model_dir), False, 2, 8)
    assert cfg.policy.max_position_embeddings == 48  # the model's own context length, as for any policy.path
    assert (target.weights, target.step, target.run_cfg) == ("model", None, None)


@pytest.mark.slow
def test_eval_of_a_run_reproduces_the_trainers_last_heldout_figure(tmp_path, ray_session, capsys):
    from rl.trainer import train

    exp = tiny_experiment(tmp_path)
    run_dir = tmp_path / "runs" / "tiny"
    summary = train(load_config(exp), run_dir)
    assert summary["step"] == 2
    trained = summary["eval/pass_at_1"]
    assert 0 < trained < 1 and 0 < summary["eval/score"] < 1  # so that agreement is not 0 == 0

    report_file = tmp_path / "eval.json"
    assert main(["eval", str(run_dir), "--json", str(report_file)]) == 0
    table = capsys.readouterr().out
    report = json.loads(report_file.read_text())
    assert report["metrics"]["eval/pass_at_1"] == trained
    assert report["metrics"]["eval/pass_at_1_level1"] == summary["eval/pass_at_1_level1"]
    assert report["metrics"]["eval/score"] == summary["eval/score"]
    assert (report["weights"], report["step"], report["seed"], report["samples"], report["workers"], report["tasks"]) == ("average", 2, 3 + 7_777_777, 2, 1, 16)
    assert report["pass_at_k"]["1"] == pytest.approx(trained) and report["pass_at_k"]["2"] >= trained
    assert "pass@2" in table and f"{100 * trained:6.2f}%" in table
