"""The prover environment against a real coqc: oracles pass, wrong proofs and cheats fail."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from envs.prover import ProverEnv, check, coq_available
from envs.prover import checker
from envs.prover.generator import make_theorem


def test_coq_is_installed():
    assert coq_available(), "install Debian's coq package (the Makefile does)"


def test_oracle_proofs_pass_at_every_level():
    env = ProverEnv(levels=(1, 2, 3, 4, 5))
    tasks = env.sample(15, np.random.default_rng(0))
    assert {t.payload["level"] for t in tasks} == {1, 2, 3, 4, 5}
    with ThreadPoolExecutor(4) as pool:
        verdicts = list(pool.map(lambda t: env.verify(t, env.oracle(t)), tasks))
    assert [v.passed for v in verdicts] == [True] * 15, [v.reason for v in verdicts]
    # a trailing self-verdict is not part of the proof
    assert env.verify(tasks[0], env.oracle(tasks[0]) + " <verify>p=0.9</verify>").passed


def test_heldout_split_is_disjoint():
    env = ProverEnv(levels=(1, 2, 3, 4, 5))
    heldout = {t.payload["theorem"].split(":", 1)[1] for t in env.eval_tasks(30)}
    train = {t.payload["theorem"].split(":", 1)[1] for t in env.sample(2000, np.random.default_rng(1))}
    assert heldout and not heldout & train


def test_heldout_is_many_unseen_instances_of_every_level():
    # held-out theorems are new names and constants in templates training sees: many distinct
    # statements from every level, not a few theorems repeated (which would make pass@1 bimodal)
    env = ProverEnv(levels=(1, 2, 3, 4, 5), eval_size=64)
    tasks = env.eval_tasks()
    statements = [t.payload["theorem"].split(":", 1)[1] for t in tasks]
    assert len(set(statements)) >= 0.75 * len(tasks)
    per_level = {lv: sum(t.payload["level"] == lv for t in tasks) for lv in (1, 2, 3, 4, 5)}
    assert min(per_level.values()) >= 5, per_level


def test_oracle_proofs_use_the_statements_names():
    rng = np.random.default_rng(3)
    for _ in range(50):
        theorem, proof = make_theorem(2, rng, 0)
        var = theorem.split("forall ", 1)[1].split(" ", 1)[0]
        assert proof == f"intros {var}. lia."


@pytest.mark.parametrize(
    "theorem, proof, reason",
    [
        ("Theorem t : 2 + 3 = 6.", "reflexivity.", "coqc rejected"),
        ("Theorem t : forall n : nat, n = 0.", "intros. lia.", "coqc rejected"),
        ("Theorem t : 2 + 3 = 6.", "admit.", "forbidden"),
        ("Theorem t : 2 + 3 = 6.", "Admitted.", "forbidden"),
        ("Theorem t : 2 + 3 = 6.", "Abort.", "forbidden"),
        ("Theorem t : 2 + 3 = 6.", "Qed. Axiom cheat : False.", "forbidden"),
        ("Theorem t : 2 + 3 = 6.", "exfalso. Parameter p : False. exact p.", "forbidden"),
        ("Theorem t : 2 + 3 = 5.", "(* hidden *) reflexivity.", "comments"),
        ("Theorem t : 2 + 3 = 6.", "", "empty"),
        ("Theorem t : 2 + 3 = 5.", "repeat (idtac).", "coqc rejected"),  # unfinished proof
        ("Theorem t : 2 + 3 = 6.", "Load evil.", "forbidden"),
        ("Theorem t : 2 + 3 = 6.", "Redirect \"out\" reflexivity.", "forbidden"),
        ("Theorem t : 2 + 3 = 6.", "Extraction nat.", "forbidden"),
        ("Theorem t : 2 + 3 = 6.", "Qed. Theorem u : True.", "forbidden"),
    ],
)
def test_wrong_proofs_and_cheats_fail(theorem, proof, reason):
    v = check(theorem, proof)
    assert not v.passed and reason in v.reason, v.reason


def test_print_assumptions_catches_what_the_text_check_misses(monkeypatch):
    # an axiom smuggled into the context is invisible to the proof text but not to Coq
    monkeypatch.setattr(checker, "PREAMBLE", checker.PREAMBLE + "Axiom cheat : forall P : Prop, P.\n")
    v = check("Theorem t : 2 + 3 = 6.", "apply cheat.")
    assert not v.passed and "assumptions" in v.reason and "cheat" in v.reason


def test_allow_list_admits_named_axioms_only(monkeypatch):
    monkeypatch.setattr(checker, "PREAMBLE", checker.PREAMBLE + "Axiom cheat : forall P : Prop, P.\n")
    assert check("Theorem t : 2 + 3 = 6.", "apply cheat.", allowed_axioms=("cheat",)).passed
    assert not check("Theorem t : 2 + 3 = 6.", "apply cheat.", allowed_axioms=("other",)).passed


def test_non_terminating_tactic_is_killed():
    v = check("Theorem t : 2 + 3 = 5.", "repeat (idtac; fail 0) || (do 1000000000 idtac); reflexivity.", timeout_s=2.0)
    assert not v.passed


def test_not_a_theorem_statement():
    with pytest.raises(ValueError):
        check("Definition x := 3.", "reflexivity.")
