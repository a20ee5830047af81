"""Episodes survive a Parquet round trip, nested parts included."""

from __future__ import annotations

import pyarrow.parquet as pq

from rollout.episode import Episode, RewardBreakdown, Turn, read_parquet, write_parquet


def make_episode(i: int) -> Episode:
    sub = Episode(task_id=f"t{i}/sub", env="swarm", prompt="find x", prompt_ids=[5, 6], turns=[Turn("assistant", "x=1", [7, 8], [-0.1, -0.2], True, 0)], finish_reason="stop", stage=1)
    return Episode(
        task_id=f"t{i}",
        env="math",
        prompt="1+2=",
        prompt_ids=[22, 16, 23, 34],
        turns=[Turn("assistant", "3", [24, 2], [-0.5, -0.01], True)],
        finish_reason="stop",
        group=i // 2,
        step=4,
        verdict={"passed": True, "score": 1.0},
        reward=RewardBreakdown(components={"outcome": 1.0, "format": 1.0}, weights={"outcome": 1.0, "format": 0.1}, total=1.1, errors=["length"]),
        advantage=0.75,
        sub_episodes=[sub] if i % 2 else [],
        timings={"generate_s": 0.01},
    )


def test_parquet_round_trip(tmp_path):
    episodes = [make_episode(i) for i in range(5)]
    path = write_parquet(episodes, tmp_path / "episodes" / "step_000004.parquet")
    table = pq.read_table(path)
    assert table.num_rows == 5
    for col in ["prompt", "completion", "prompt_tokens", "completion_tokens", "reward", "reward_components", "advantage", "verdict", "passed"]:
        assert col in table.column_names
    assert table.column("completion_tokens").to_pylist() == [2] * 5
    back = read_parquet(path)
    assert back == episodes
    assert back[1].sub_episodes[0].stage == 1
    assert not list(tmp_path.rglob("*.tmp")), "no temp files left behind"
