"""The `dataset` env: rows of a Parquet or JSONL file, graded by the math or code verifier or a user's grader."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from envs.dataset import DatasetEnv
from envs.dataset.env import gsm_completion
from envs.dataset.rows import DatasetError
from envs.registry import verifier_errors, verify_batch
from rl.cli import main

ROWS = [{"question": f"Ann has {a} pens and gets {b} more. How many pens?", "answer": f"Ann has {a} + {b} = {a + b} pens.\n#### {a + b}", "level": 1 + (a % 2)} for a in range(1, 21) for b in range(1, 6)]


def write_parquet(path: Path, rows: list[dict]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(params=["parquet", "jsonl"])
def data_file(request, tmp_path) -> Path:
    writer = write_parquet if request.param == "parquet" else write_jsonl
    return writer(tmp_path / f"rows.{request.param}", ROWS)


def test_rows_split_without_overlap_and_sample_only_training_rows(data_file):
    env = DatasetEnv(str(data_file), heldout_fraction=0.2, eval_size=50)
    held = {t.prompt for t in env.eval_tasks()}
    trained = {t.prompt for t in env.sample(500, np.random.default_rng(0))}
    assert held and trained and not held & trained
    assert len(held) + len({t.prompt for t in env.train_tasks}) == len(ROWS)
    assert [t.id for t in env.eval_tasks(5)] == [t.id for t in env.eval_tasks(5)]  # the same every call
    assert env.sample(8, np.random.default_rng(3)) == env.sample(8, np.random.default_rng(3))


def test_math_rows_grade_free_form_completions(data_file):
    env = DatasetEnv(str(data_file))
    task = next(t for t in env.train_tasks if t.payload["answer"].endswith("#### 12") and "7 pens" in t.prompt)
    assert env.verify(task, "7 + 5 = 12, so she has 12 pens. The answer is \\boxed{12}.").passed
    assert env.verify(task, "#### 12").passed
    wrong = env.verify(task, "The answer is \\boxed{13}.")
    assert (wrong.passed, wrong.parsed, wrong.score) == (False, True, 0.0)
    assert not env.verify(task, "I think it is 12 or 13").parsed
    assert not env.verify(task, "\\boxed{12} \\boxed{13}").passed  # a hedge
    assert env.verify(task, env.oracle(task)).passed
    assert env.oracle(task) == "Ann has 7 + 5 = 12 pens.\nThe answer is \\boxed{12}."
    assert env.verify(task, env.oracle(task) + "<verify>p=0.9</verify>").passed  # the self-verdict is not part of the answer


def test_gsm_completion_of_bare_and_worked_answers():
    assert gsm_completion("72") == "The answer is \\boxed{72}."
    assert gsm_completion("3 * 4 = 12\n12 + 1 = 13\n#### 13") == "3 * 4 = 12\n12 + 1 = 13\nThe answer is \\boxed{13}."


def test_level_column_filters_rows_and_labels_tasks(tmp_path):
    env = DatasetEnv(str(write_parquet(tmp_path / "r.parquet", ROWS)), level_key="level", levels=(2,))
    assert {t.payload["level"] for t in env.train_tasks + env.eval_tasks()} == {2}
    with pytest.raises(DatasetError, match="no row has a 'level' in env.levels"):
        DatasetEnv(str(tmp_path / "r.parquet"), level_key="level", levels=(3,))


def test_eval_file_is_the_heldout_split(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", ROWS[:60])
    heldout = write_parquet(tmp_path / "test.parquet", ROWS[60:])
    env = DatasetEnv(str(train), eval_path=str(heldout))
    assert len(env.train_tasks) == 60 and [t.prompt for t in env.eval_tasks(1000)] == [r["question"] for r in ROWS[60:]]


GRADER = """
def grade(completion, row):
    if "boom" in completion:
        raise RuntimeError("grader bug")
    return 0.5 if completion.strip() == row["answer"].split("#### ")[-1] + "?" else completion.strip() == row["answer"].split("#### ")[-1]
"""


def test_user_grader_by_file_path_and_its_crashes_are_contained(tmp_path):
    (tmp_path / "my_grader.py").write_text(GRADER)
    env = DatasetEnv(str(write_parquet(tmp_path / "r.parquet", ROWS)), verifier=f"{tmp_path / 'my_grader.py'}:grade")
    task = env.train_tasks[0]
    truth = task.payload["answer"].split("#### ")[-1]
    verdicts = verify_batch(env, [task] * 4, [truth, truth + "?", "boom", "nope"], workers=2)
    assert [v.score for v in verdicts] == [1.0, 0.5, 0.0, 0.0]
    assert [v.passed for v in verdicts] == [True, False, False, False]
    assert verifier_errors(verdicts) == 1 and "grader bug" in verdicts[2].reason


def test_user_grader_returning_nonsense_is_a_counted_error(tmp_path):
    (tmp_path / "bad.py").write_text("def grade(completion, row):\n    return 'yes'\n")
    env = DatasetEnv(str(write_parquet(tmp_path / "r.parquet", ROWS)), verifier=f"{tmp_path / 'bad.py'}:grade")
    assert verifier_errors(verify_batch(env, env.train_tasks[:1], ["x"])) == 1


HE_ROWS = [
    {
        "prompt": f'def add_{k}(x):\n    """x plus {k}."""\n',
        "test": f"def check(candidate):\n    assert candidate(1) == {1 + k}\n    assert candidate(-{k}) == 0\n",
        "entry_point": f"add_{k}",
        "canonical_solution": f"    return x + {k}\n",
    }
    for k in range(40)
]


def test_code_rows_run_their_tests_in_the_sandbox(tmp_path):
    env = DatasetEnv(str(write_jsonl(tmp_path / "code.jsonl", HE_ROWS)), prompt_key="prompt", answer_key="test", verifier="code")
    task = env.train_tasks[0]
    assert env.parallel_verify
    assert env.verify(task, env.oracle(task)).passed
    assert not env.verify(task, "    return x\n").passed
    assert not env.verify(task, "    import sys; sys.exit(0)\n").passed  # ending early is not passing


def test_humaneval_as_the_heldout_set(tmp_path):
    env = DatasetEnv(str(write_jsonl(tmp_path / "code.jsonl", HE_ROWS)), prompt_key="prompt", answer_key="test", verifier="code", eval_path="humaneval", eval_size=164)
    tasks = env.eval_tasks()
    assert len(tasks) == 164 and tasks[0].id == "HumanEval/0"
    assert env.verify(tasks[0], env.oracle(tasks[0])).passed


EXP = """
run: {name: t, runs_dir: RUNS}
policy: {arch: llama}
env: {name: dataset, path: PATH}
train: {steps: 1}
"""


@pytest.mark.parametrize(
    "make, env_extra, needles",
    [
        (lambda p: p.write_text(""), "", ["rows.jsonl", "no rows"]),
        (lambda p: p.write_text('{"question": "q"}\n'), "", ["rows.jsonl", "no column 'answer'", "question"]),
        (lambda p: p.write_text('{"question": "q", "answer": "1"}\nnot json\n'), "", ["rows.jsonl", "unreadable jsonl"]),
        (lambda p: p.write_text('{"question": "q", "answer": "1"}\n{"question": null, "answer": "2"}\n'), "", ["rows.jsonl", "'question' is empty in 1 row", "row 1"]),
        (lambda p: write_jsonl(p, ROWS), ", prompt_key: text", ["no column 'text'"]),
        (lambda p: write_jsonl(p, ROWS), ", verifier: code", ["no column 'entry_point'"]),
        (lambda p: write_jsonl(p, ROWS), ", eval_path: humaneval", ["needs env.verifier code"]),
        (lambda p: write_jsonl(p, ROWS), ", verifier: grade_it", ["env.verifier must be math, code or module:function"]),
        (lambda p: None, "", ["rows.jsonl: no such dataset file"]),
    ],
)
def test_bad_dataset_files_exit_2_naming_file_and_column(tmp_path, capsys, make, env_extra, needles):
    data = tmp_path / "rows.jsonl"
    make(data)
    exp = tmp_path / "exp.yaml"
    exp.write_text(EXP.replace("RUNS", str(tmp_path / "runs")).replace("PATH", str(data)).replace("}\ntrain", env_extra + "}\ntrain", 1))
    code = main(["train", str(exp)])
    err = capsys.readouterr().err
    assert code == 2, err
    for needle in needles:
        assert needle in err
    assert not (tmp_path / "runs").exists()  # nothing started


def test_dataset_keys_on_another_env_are_refused(tmp_path, capsys):
    exp = tmp_path / "exp.yaml"
    exp.write_text(textwrap.dedent(EXP).replace("RUNS", str(tmp_path)).replace("name: dataset", "name: math"))
    assert main(["config", str(exp)]) == 2
    assert "env.path is for env dataset" in capsys.readouterr().err
