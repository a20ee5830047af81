"""Procedural theorems about natural numbers, lists and propositions, with oracle proofs.

  1  closed arithmetic facts           2 + 3 = 5                                  reflexivity.
  2  one-variable identities            forall x : nat, x + 7 = 7 + x              intros x. lia.
  3  two-variable laws and orderings    forall a b : nat, 4 * (a + b) = 4 * a + 4 * b   intros. lia.
  4  propositional logic                forall U W : Prop, U /\\ W -> W /\\ U         tauto.
  5  list lemmas                        forall xs : list nat, length (rev xs) = length xs
                                                                   intros xs. apply rev_length.

Every statement draws its variable names and constants, so each template has many instances and
the held-out split (by statement) holds out unseen instances of templates that training does
see: the held-out score measures whether the policy reads the statement (its names, its
constants), not whether it memorised a handful of theorems.
"""

from __future__ import annotations

import numpy as np

LEVELS = (1, 2, 3, 4, 5)
NAT_VARS = ("n", "m", "p", "q", "x", "y", "z", "a", "b", "c", "k", "i", "j")
PROP_VARS = ("P", "Q", "R", "T", "U", "V", "W", "A", "B", "C", "D", "E")  # no S: it would shadow nat's successor
LIST_VARS = ("l", "xs", "ys", "zs", "l1", "l2", "u", "v", "w")


def _names(rng: np.random.Generator, pool: tuple[str, ...], k: int) -> list[str]:
    return [pool[int(i)] for i in rng.choice(len(pool), size=k, replace=False)]


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
        (v,), k = _names(rng, NAT_VARS, 1), r(1, 99)
        forms = [f"{v} + {k} = {k} + {v}", f"{v} * {k} = {k} * {v}", f"{v} + {k} - {k} = {v}", f"{v} <= {v} + {k}"]
        return f"Theorem {name} : forall {v} : nat, {forms[r(0, len(forms) - 1)]}.", f"intros {v}. lia."
    if level == 3:
        v, w, u = _names(rng, NAT_VARS, 3)
        k = r(2, 99)
        forms = [
            f"forall {v} {w} : nat, {v} + {w} = {w} + {v}",
            f"forall {v} {w} : nat, {v} <= {v} + {w}",
            f"forall {v} {w} : nat, {k} * ({v} + {w}) = {k} * {v} + {k} * {w}",
            f"forall {v} {w} {u} : nat, {v} + ({w} + {u}) = ({v} + {w}) + {u}",
        ]
        return f"Theorem {name} : {forms[r(0, len(forms) - 1)]}.", "intros. lia."
    if level == 4:
        p, q, s = _names(rng, PROP_VARS, 3)
        forms = [
            f"forall {p} {q} : Prop, {p} /\\ {q} -> {q} /\\ {p}",
            f"forall {p} {q} : Prop, {p} -> {p} \\/ {q}",
            f"forall {p} {q} {s} : Prop, ({p} -> {q}) -> ({q} -> {s}) -> {p} -> {s}",
            f"forall {p} : Prop, {p} -> ~ ~ {p}",
            f"forall {p} {q} : Prop, {p} -> {q} -> {p} /\\ {q}",
            f"forall {p} {q} : Prop, {p} \\/ {q} -> {q} \\/ {p}",
        ]
        return f"Theorem {name} : {forms[r(0, len(forms) - 1)]}.", "tauto."
    if level == 5:
        v, w = _names(rng, LIST_VARS, 2)
        k = r(0, 99)
        forms = [
            (f"forall {v} : list nat, length (rev {v}) = length {v}", f"intros {v}. apply rev_length."),
            (f"forall {v} : list nat, {v} ++ [] = {v}", f"intros {v}. apply app_nil_r."),
            (f"forall {v} {w} : list nat, length ({v} ++ {w}) = length {v} + length {w}", f"intros {v} {w}. apply app_length."),
            (f"forall {v} : list nat, length ({k} :: {v}) = S (length {v})", f"intros {v}. reflexivity."),
        ]
        stmt, proof = forms[r(0, len(forms) - 1)]
        return f"Theorem {name} : {stmt}.", proof
    raise ValueError(f"unknown prover level {level}; levels are 1-5")
