"""`swarmrl sweep` plans: which keys the files differ in, said before anything runs."""

from __future__ import annotations

from pathlib import Path

from rl.sweep import plan_sweep

REPO = Path(__file__).resolve().parents[1]


def plan(pattern, *overrides):
    said = []
    planned = plan_sweep(str(pattern), list(overrides), None, log=said.append)
    return planned, said


def test_the_shipped_parl_sweep_differs_only_in_its_schedules():
    planned, said = plan(REPO / "experiments" / "schedules_parl")
    assert [f.stem for f, _ in planned] == ["lambda_annealed", "lambda_constant", "lambda_off"]
    assert said == ["sweep schedules_parl: 3 runs; the files differ in rewards.finish.weight, rewards.instantiation.weight"]
    by_name = {cfg.run.name: cfg for _, cfg in planned}
    weights = {n: [c.rewards.root[k].weight.weight_at(s) for k in ("instantiation", "finish") for s in (0, 75, 150)] for n, c in by_name.items()}
    assert weights == {
        "lambda_off": [0.0] * 6,
        "lambda_constant": [0.3] * 6,
        "lambda_annealed": [0.3, 0.15, 0.0] * 2,
    }
    # the sweep is one MLflow experiment, each run tagged with what it varies
    assert {cfg.tracking.experiment for cfg in by_name.values()} == {"schedules_parl"}
    assert by_name["lambda_annealed"].run.tags["sweep.rewards.finish.weight.kind"] == "linear"
    # another RL seed keeps the one cached bootstrap
    reseeded = plan(REPO / "experiments" / "schedules_parl", "run.seed=1")[0][0][1]
    assert reseeded.run.seed == 1 and reseeded.sft_seed == planned[0][1].sft_seed == 0


def test_a_sweep_that_varies_more_than_rewards_names_the_keys(tmp_path):
    src = (REPO / "experiments" / "schedules_parl" / "lambda_off.yaml").read_text()
    (tmp_path / "a.yaml").write_text(src)
    (tmp_path / "b.yaml").write_text(src.replace("  lr: 1.0e-3", "  lr: 2.0e-3").replace("group_size: 4", "group_size: 8"))
    (tmp_path / "c.yaml").write_text(src.replace("value: 0.0}", "value: 0.1}", 1))  # instantiation's weight
    _, said = plan(tmp_path)
    assert said[0] == f"sweep {tmp_path.name}: 3 runs; the files differ in optimizer.lr, rewards.instantiation.weight, rollout.group_size"
    assert said[1].startswith("note: the files differ in more than their reward schedules: optimizer.lr, rollout.group_size")
    _, said = plan(tmp_path / "a.yaml")  # one file: nothing varies
    assert said == [f"sweep {tmp_path.name}: 1 run; the files differ in nothing but run.name"]
