"""Config errors: each kind exits 2 with one message naming the key, before anything starts."""

from __future__ import annotations

import subprocess
import sys
import typing
from pathlib import Path

import pytest

from rl.cli import main
from rl.config import ConfigError, ExperimentConfig, load_config

REPO = Path(__file__).resolve().parents[1]
GOOD = """
run: {name: t, runs_dir: RUNS}
policy: {arch: llama}
env: {name: math}
train: {steps: 3}
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "exp.yaml"
    p.write_text(text.replace("RUNS", str(tmp_path / "runs")))
    return p


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.err + captured.out


def test_good_file_validates_and_overrides_apply(tmp_path):
    cfg = load_config(write(tmp_path, GOOD), ["train.steps=7", "rollout.temperature=0.5", "env.levels=[1,2]"])
    assert cfg.train.steps == 7
    assert cfg.rollout.temperature == 0.5
    assert cfg.env.levels == [1, 2]
    assert cfg.policy.head_dim == 32


@pytest.mark.parametrize(
    "text, needles",
    [
        (GOOD + "trian: {steps: 3}\n", ["unknown key 'trian'", "Did you mean 'train'"]),
        (GOOD.replace("steps: 3", "stesp: 3"), ["unknown key 'train.stesp'", "Did you mean 'train.steps'"]),
        (GOOD.replace("steps: 3", "steps: many"), ["train.steps", "integer"]),
        (GOOD.replace("steps: 3", "steps: -1"), ["train.steps", "greater than or equal to 1"]),
        (GOOD + "rollout: {top_p: 1.5}\n", ["rollout.top_p", "less than or equal to 1"]),
        (GOOD + "policy: {head_dim: 16}\n", ["policy.head_dim"]),
        ("run: {name: t}\nenv: {name: math}\n", ["missing section 'policy'"]),
        (GOOD.replace("env: {name: math}", "env: {levels: [1]}"), ["env.name"]),
        (GOOD + "optimizer: {name: sgd}\n", ["optimizer.name", "'muonclip'"]),
        (GOOD.replace("env: {name: math}", "env: {name: math, levels: [5], fixed_width: true}"), ["env.fixed_width", "levels [1, 2, 3]"]),
    ],
)
def test_bad_values_name_the_key(tmp_path, capsys, text, needles):
    exp = write(tmp_path, text)
    code, out = run_cli(["train", str(exp)], capsys)
    assert code == 2
    for n in needles:
        assert n in out, out
    assert not (tmp_path / "runs").exists(), "a bad config must not create a run directory"


def test_yaml_syntax_error_has_line_number(tmp_path, capsys):
    exp = write(tmp_path, "run:\n  name: t\npolicy: {arch: llama\nenv: {name: math}\n")
    code, out = run_cli(["train", str(exp)], capsys)
    assert code == 2
    assert "line " in out and "YAML syntax error" in out


def test_missing_file(tmp_path, capsys):
    code, out = run_cli(["train", str(tmp_path / "nope.yaml")], capsys)
    assert code == 2 and "no such experiment file" in out


def test_bad_override_names_key(tmp_path, capsys):
    code, out = run_cli(["train", str(write(tmp_path, GOOD)), "train.stepz=4"], capsys)
    assert code == 2 and "train.stepz" in out and "train.steps" in out
    code, out = run_cli(["train", str(write(tmp_path, GOOD)), "novalue"], capsys)
    assert code == 2 and "KEY=VALUE" in out


def test_bad_config_starts_nothing(tmp_path):
    """The real console script: exit 2, no Ray session, no MLflow store, no run directory."""
    exp = write(tmp_path, GOOD + "algorithm: {advantage: ppo}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "rl", "train", str(exp)], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert proc.returncode == 2, proc.stderr
    assert "algorithm.advantage" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0, "one clear message, not a traceback"
    assert not (tmp_path / "runs").exists()
    assert "ray" not in proc.stderr.lower()


def test_explain_lists_every_key(capsys):
    code, out = run_cli(["config", "--explain"], capsys)
    assert code == 0
    for section, model in ExperimentConfig.model_fields.items():
        assert f"\n{section}:" in "\n" + out
    for key in ["train.steps", "optimizer.qk_clip_tau", "rollout.group_size", "algorithm.clip_high", "policy.head_dim"]:
        assert f"  {key}:" in out
    # every leaf has a description line
    assert "= required" in out
    code, out = run_cli(["config", "--explain", "optimizer"], capsys)
    assert code == 0 and "optimizer.lr" in out and "train.steps" not in out
    code, out = run_cli(["config", "--explain", "optimiser"], capsys)
    assert code == 2


def test_every_field_is_documented():
    def walk(model, prefix=""):
        for name, f in model.model_fields.items():
            assert f.description, f"{prefix}{name} has no description"
            ann = f.annotation
            if type(None) in typing.get_args(ann):  # an optional section (`Section | None`) is walked too
                ann = next(a for a in typing.get_args(ann) if a is not type(None))
            if isinstance(ann, type) and hasattr(ann, "model_fields") and not hasattr(ann, "explain"):
                walk(ann, prefix + name + ".")

    walk(ExperimentConfig)


def test_shipped_experiments_validate(tmp_path):
    """Experiments on files that `make` writes (`make gsm-tiny`) are validated on small stand-ins of those files."""
    import yaml

    from envs.dataset.word_problems import generate, write
    from policies.tiny_checkpoint import write_tiny_checkpoint

    rows = generate(40, seed=0, levels=(1,))
    data = write(rows, tmp_path / "rows.parquet")
    model = write_tiny_checkpoint(tmp_path / "model", [r["question"] + r["solution"] for r in rows], vocab_size=300)
    for exp in sorted((REPO / "experiments").rglob("*.yaml")):
        spec = yaml.safe_load(exp.read_text())
        made = [f"{key}={stand_in}" for key, path, stand_in in (("env.path", spec["env"].get("path"), data), ("policy.path", spec["policy"].get("path"), model)) if path and not Path(path).exists()]
        load_config(exp, made)


def test_config_error_is_an_exception_type(tmp_path):
    with pytest.raises(ConfigError):
        load_config(write(tmp_path, "- a list\n"))


def test_docs_config_md_is_up_to_date():
    from rl.explain import explain

    text = (REPO / "docs" / "config.md").read_text()
    assert explain() in text, "regenerate docs/config.md with `swarmrl config --explain`"


def test_policy_sections_validate_like_every_other_section():
    """`policies.spec` keeps its own copy of `Section`'s settings (it may not import `rl`)."""
    from policies.spec import PolicyConfig, PolicySection
    from rl.config import Section

    assert PolicySection.model_config == Section.model_config
    assert ExperimentConfig.model_fields["policy"].annotation is PolicyConfig
