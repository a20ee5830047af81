"""`swarmrl compare` on a real MLflow store whose runs the test logs by hand (no training)."""

from __future__ import annotations

import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from PIL import Image

from rl.compare import TAIL, compare, format_table
from rl.tracking import default_uri


def log(client, exp_id, name, metrics: dict[str, list[tuple[int, float]]]) -> str:
    run = client.create_run(exp_id, run_name=name)
    client.log_batch(run.info.run_id, metrics=[Metric(k, v, 0, s) for k, pts in metrics.items() for s, v in pts])
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def test_runs_of_one_name_each_get_a_row_and_a_line(tmp_path):
    uri = default_uri(tmp_path)
    client = MlflowClient(uri)
    exp = client.create_experiment("twice", artifact_location=(tmp_path / "art").as_uri())
    ids = [log(client, exp, "a", {"eval/pass_at_1": [(0, 0.1), (2, v)], "reward/mean": [(1, 0.5), (2, v)], "time/rl_wall_s": [(2, 60.0)]}) for v in (0.3, 0.4)]
    rows, png = compare(uri, "twice", tmp_path / "c.png")
    assert [r["run"] for r in rows] == [f"a ({ids[0][:6]})", f"a ({ids[1][:6]})"]
    assert [r["pass@1 final"] for r in rows] == [0.3, 0.4] and not any(r["parl"] for r in rows)
    assert "pass@1 best" in format_table(rows)
    assert Image.open(png).text["Description"] == "panels: eval/pass_at_1; reward/mean"


def test_parl_columns_come_from_the_last_evaluation_and_the_last_steps(tmp_path):
    uri = default_uri(tmp_path)
    client = MlflowClient(uri)
    exp = client.create_experiment("lam", artifact_location=(tmp_path / "art").as_uri())
    steps = range(1, 13)
    log(
        client,
        exp,
        "off",
        {
            "eval/score": [(0, 0.6), (12, 0.4)],
            "eval/pass_at_1": [(0, 0.4), (12, 0.2)],
            "eval/parl/critical_steps": [(0, 4.5), (12, 4.25)],
            "eval/parl/total_steps": [(0, 5.0), (12, 4.25)],
            "eval/parl/subagents": [(0, 0.5), (12, 0.0)],
            "eval/parl/own_tool_calls": [(0, 2.0), (12, 3.0)],
            "reward/outcome": [(s, float(s)) for s in steps],  # mean of the last TAIL steps: 10
            "reward/instantiation": [(s, 0.0) for s in steps],
            "weight/instantiation": [(s, 0.0) for s in steps],
            "parl/subagents": [(s, 0.1) for s in steps],
            "time/rl_wall_s": [(12, 120.0)],
        },
    )
    rows, png = compare(uri, "lam", tmp_path / "c.png")
    (r,) = rows
    assert r["parl"] and r["steps"] == 12 and r["wall min"] == 2.0
    assert (r["item F1 start"], r["item F1"], r["critical"], r["total"], r["sub-agents/ep"], r["own tools/ep"]) == (0.6, 0.4, 4.25, 4.25, 0.0, 3.0)
    assert r["components"] == {"outcome": pytest.approx(sum(range(13 - TAIL, 13)) / TAIL), "instantiation": 0.0}
    table = format_table(rows)
    assert table.splitlines()[0].split()[:4] == ["run", "steps", "item", "F1"] and "r.outcome" in table and "pass@1 best" not in table
    panels = Image.open(png).text["Description"].removeprefix("panels: ").split("; ")
    assert panels == ["eval/pass_at_1", "eval/score", "parl/subagents", "reward/instantiation", "reward/outcome", "weight/instantiation"]
