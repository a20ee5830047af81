"""The GSM8K-style word problem generator: layout, exact arithmetic, determinism, files."""

from __future__ import annotations

import json
import random
import re

import pyarrow.json as pj
import pyarrow.parquet as pq
import pytest

from envs.dataset import word_problems as wp

STEP = re.compile(r"(\d+) ([+\-*]) (\d+) = (\d+)")
OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


def steps(answer: str) -> list[tuple[int, str, int, int]]:
    """The `a op b = c` steps of an answer, one per worked line (every worked line has one)."""
    out = []
    for line in answer.splitlines()[:-1]:
        found = STEP.findall(line)
        assert len(found) == 1, line
        a, op, b, c = found[0]
        out.append((int(a), op, int(b), int(c)))
    return out


def test_example_row_layout():
    row = wp.generate(1, seed=0)[0]
    assert set(row) == {"question", "answer", "level", "solution"}
    assert row["solution"] == wp.solution_to_completion(row["answer"])
    assert row["question"].endswith("?")
    assert re.fullmatch(r"#### \d+", row["answer"].splitlines()[-1])


def test_deterministic_by_seed():
    assert wp.generate(50, seed=3) == wp.generate(50, seed=3)
    assert wp.generate(50, seed=3) != wp.generate(50, seed=4)
    assert wp.generate(10, seed=3) == wp.generate(50, seed=3)[:10]


@pytest.mark.parametrize("level", wp.LEVELS)
def test_levels_filter(level):
    rows = wp.generate(40, seed=1, levels=(level,))
    assert {r["level"] for r in rows} == {level}


def test_arithmetic_is_exact_and_levels_have_their_shape():
    rows = wp.generate(900, seed=7)
    assert {r["level"] for r in rows} == {1, 2, 3}
    for row in rows:
        answer = row["answer"]
        final = answer.splitlines()[-1]
        assert final.startswith("#### ")
        value = int(final[5:])
        found = steps(answer)
        for a, op, b, c in found:
            assert OPS[op](a, b) == c, answer
            assert min(a, b, c) >= 0
        assert found[-1][3] == value >= 0
        if len(found) == 2:  # the second step builds on the first result
            assert found[0][3] in found[1][:3:2], answer
        ops = sorted(op for _, op, _, _ in found)
        if row["level"] == 1:
            assert len(found) == 1 and ops[0] in "+-"
            assert max(found[0][0], found[0][2]) <= 20
        elif row["level"] == 2:
            assert ops == ["*"] or (len(ops) == 2 and "*" not in ops), answer
            if ops == ["*"]:
                assert max(found[0][0], found[0][2]) <= 12
        else:
            assert len(ops) == 2 and ops.count("*") == 1, answer


def test_every_template_is_exact():
    rng = random.Random(0)
    for level, templates in wp.TEMPLATES.items():
        assert len(templates) >= 3, level
        for template in templates:
            for _ in range(100):
                question, lines, value = template(rng)
                assert question.endswith("?") and value >= 0
                found = steps("\n".join([*lines, f"#### {value}"]))
                assert all(OPS[op](a, b) == c for a, op, b, c in found)
                assert found[-1][3] == value


def test_vocabulary_is_small():
    rows = wp.generate(600, seed=2)
    words = {w for r in rows for w in re.findall(r"[A-Za-z]+", r["question"] + " " + r["answer"])}
    assert len(words) < 100


def test_solution_to_completion():
    answer = "Mia has 7 + 5 = 12 apples.\n#### 12"
    assert wp.solution_to_completion(answer) == "Mia has 7 + 5 = 12 apples.\nThe answer is \\boxed{12}."
    for row in wp.generate(30, seed=5):
        completion = wp.solution_to_completion(row["answer"])
        value = row["answer"].rsplit("#### ", 1)[1]
        assert completion.endswith(f"\\boxed{{{value}}}.")
        assert "####" not in completion
        assert completion.splitlines()[:-1] == row["answer"].splitlines()[:-1]
    # a real GSM8K answer: calculator annotations and thousands separators go away
    gsm = "She sold 48/2 = <<48/2=24>>24 clips in May.\nIn all 48+24 = <<48+24=72>>72 clips.\n#### 1,072"
    assert wp.solution_to_completion(gsm) == (
        "She sold 48/2 = 24 clips in May.\nIn all 48+24 = 72 clips.\nThe answer is \\boxed{1072}."
    )
    with pytest.raises(ValueError, match="####"):
        wp.solution_to_completion("no final line")


def test_write_parquet_and_jsonl(tmp_path):
    rows = wp.generate(25, seed=9)
    parquet = wp.write(rows, tmp_path / "sub" / "p.parquet")
    assert pq.read_table(parquet).to_pylist() == rows
    jsonl = wp.write(rows, tmp_path / "p.jsonl")
    assert pj.read_json(jsonl).to_pylist() == rows
    assert [json.loads(line) for line in jsonl.read_text().splitlines()] == rows
    with pytest.raises(ValueError, match=r"\.csv"):
        wp.write(rows, tmp_path / "p.csv")


def test_cli(tmp_path, capsys):
    out = tmp_path / "wp.parquet"
    wp.main([str(out), "--n", "30", "--seed", "4", "--levels", "1,3"])
    table = pq.read_table(out)
    assert table.num_rows == 30
    assert table.to_pylist() == wp.generate(30, seed=4, levels=(1, 3))
    assert set(table.column("level").to_pylist()) <= {1, 3}
    assert "wrote 30" in capsys.readouterr().out
