"""Proof checking with Coq (`coqc`) in the sandbox.

`check(theorem, proof)` compiles

    Require Import Arith Lia.
    <theorem>
    Proof.
    <proof>
    Qed.
    Print Assumptions <name>.

and passes only if coqc succeeds and the theorem is closed under the global context. Cheats
score zero before anything runs: `admit`/`Admitted`, ending the proof early (`Qed`, `Defined`,
`Abort`), and any declaration that adds an assumption (`Axiom`, `Parameter`, `Hypothesis`,
`Variable`, `Conjecture`, ...). `Print Assumptions` catches whatever slips past the text check.
"""

from __future__ import annotations

import re
import secrets
import shutil
from pathlib import Path

from envs.base import Verdict
from envs.sandbox import run_command

PREAMBLE = "Require Import Arith Lia List.\nImport ListNotations.\n"
_THEOREM = re.compile(r"^\s*(?:Theorem|Lemma|Example|Corollary|Proposition|Fact|Remark)\s+([A-Za-z_][A-Za-z0-9_']*)\b[\s\S]*\.\s*$")
_FORBIDDEN = re.compile(
    r"\b(admit|Admitted|Abort|Qed|Defined|Save|Proof|Axiom|Axioms|Parameter|Parameters|Hypothesis|Hypotheses|"
    r"Variable|Variables|Conjecture|Context|Declare|Extract|Extraction|Require|Import|Export|Load|Set|Unset|Section|End|Module|"
    r"Theorem|Lemma|Definition|Fixpoint|Instance|Local|Global|Opaque|Transparent|Drop|Time|Redirect|Timeout)\b"
)
CLOSED = "Closed under the global context"


def coq_available() -> bool:
    return shutil.which("coqc") is not None


def build_source(theorem: str, proof: str) -> tuple[str, str]:
    m = _THEOREM.match(theorem)
    if not m:
        raise ValueError(f"not a theorem statement: {theorem[:80]!r}")
    name = m.group(1)
    return name, f"{PREAMBLE}{theorem.strip()}\nProof.\n{proof.strip()}\nQed.\nPrint Assumptions {name}.\n"


def check(
    theorem: str,
    proof: str,
    *,
    timeout_s: float = 10.0,
    memory_mb: int = 1024,
    allowed_axioms: tuple[str, ...] = (),
    allow_unisolated: bool = False,
) -> Verdict:
    """Compile the proof of `theorem` with coqc in the sandbox (see the module docstring).

    `allowed_axioms`: names `Print Assumptions` may list without failing the proof (default none).
    """
    if not proof.strip():
        return Verdict(False, 0.0, False, "empty proof")
    cheat = _FORBIDDEN.search(proof)
    if cheat:
        return Verdict(False, 0.0, True, f"forbidden in a proof: {cheat.group(0)!r}")
    if "(*" in proof:
        # comments can hide vernacular from the text check; proofs need none
        return Verdict(False, 0.0, True, "comments are not allowed in proofs")
    name, source = build_source(theorem, proof)
    # coqc reads findlib's config to locate its plugins; /etc is otherwise not in the sandbox
    binds = [(p, p) for p in ("/etc/ocamlfind.conf", "/etc/ocamlfind.conf.d") if Path(p).exists()]
    # a unique module name: a file named like a library module (e.g. List.v) would shadow it
    module = f"Proof_{secrets.token_hex(6)}"
    result = run_command(
        ["/usr/bin/coqc", "-q", f"/work/{module}.v"],
        files={f"{module}.v": source},
        timeout_s=timeout_s,
        memory_mb=memory_mb,
        nproc=64,
        binds=binds,
        allow_unisolated=allow_unisolated,
    )
    details = {"sandbox_status": result.status, "wall_s": round(result.wall_s, 3)}
    if result.status == "timeout":
        return Verdict(False, 0.0, True, "proof check timed out", details)
    if result.status != "ok":
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        return Verdict(False, 0.0, True, "coqc rejected the proof: " + " | ".join(tail)[:300], details)
    if CLOSED not in result.stdout:
        used = _assumptions(result.stdout)
        extra = [a for a in used if a not in allowed_axioms]
        if extra or not used:
            return Verdict(False, 0.0, True, "proof depends on assumptions: " + result.stdout.strip()[:300], details)
    return Verdict(True, 1.0, True, "proof checked", details)


def _assumptions(printed: str) -> list[str]:
    """Names listed by `Print Assumptions` ("Axioms:" then "name : type" lines)."""
    return re.findall(r"^([A-Za-z_][\w.']*) :", printed.split("Axioms:", 1)[1], re.M) if "Axioms:" in printed else []
