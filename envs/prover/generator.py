"""Procedural theorems about natural numbers, with oracle proofs, by difficulty.

  1  closed arithmetic facts           2 + 3 = 5                      reflexivity.
  2  one-variable identities            forall n : nat, n + 0 = n      intros n. lia.
  3  two-variable laws and orderings    forall n m : nat, n <= n + m   intros n m. lia.
  4  propositional logic                forall P Q : Prop, P /\\ Q -> Q /\\ P   tauto.
  5  list lemmas                        forall l : list nat, length (rev l) = length l
"""

from __future__ import annotations

import numpy as np

LEVELS = (1, 2, 3, 4, 5)


def make_theorem(level: int, rng: np.random.Generator, index: int) -> tuple[str, str]:
    """(theorem statement, oracle proof)."""
    r = lambda lo, hi: int(rng.integers(lo, hi + 1))  # noqa: E731
    name = f"t{index}"
    if level == 1:
        a, b = r(0, 20), r(0, 20)
        op = ["+", "*"][r(0, 1)]
        value = a + b if op == "+" else a * b
        return f"Theorem {name} : {a} {op} {b} = {value}.", "reflexivity."
    if level == 2:
        k = r(1, 9)
        forms = [
            f"forall n : nat, n + {k} = {k} + n",
            f"forall n : nat, n * {k} = {k} * n",
            f"forall n : nat, n + 0 = n",
            f"forall n : nat, n <= n + {k}",
        ]
        return f"Theorem {name} : {forms[r(0, len(forms) - 1)]}.", "intros n. lia."
    if level == 3:
        k = r(2, 9)
        forms = [
            "forall n m : nat, n + m = m + n",
            "forall n m : nat, n <= n + m",
            f"forall n m : nat, {k} * (n + m) = {k} * n + {k} * m",
            "forall n m p : nat, n + (m + p) = (n + m) + p",
        ]
        stmt = forms[r(0, len(forms) - 1)]
        return f"Theorem {name} : {stmt}.", "intros. lia."
    if level == 4:
        forms = [
            "forall P Q : Prop, P /\\ Q -> Q /\\ P",
            "forall P Q : Prop, P -> P \\/ Q",
            "forall P Q R : Prop, (P -> Q) -> (Q -> R) -> P -> R",
            "forall P : Prop, P -> ~ ~ P",
        ]
        return f"Theorem {name} : {forms[r(0, len(forms) - 1)]}.", "tauto."
    if level == 5:
        k = r(0, 9)
        forms = [
            ("forall l : list nat, length (rev l) = length l", "intros l. apply rev_length."),
            ("forall l : list nat, l ++ [] = l", "intros l. apply app_nil_r."),
            ("forall l m : list nat, length (l ++ m) = length l + length m", "intros l m. apply app_length."),
            (f"forall l : list nat, length ({k} :: l) = S (length l)", "intros l. reflexivity."),
        ]
        stmt, proof = forms[r(0, len(forms) - 1)]
        return f"Theorem {name} : {stmt}.", proof
    raise ValueError(f"unknown prover level {level}; levels are 1-5")
