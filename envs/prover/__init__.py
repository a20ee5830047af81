"""Theorem proving checked by Coq in the sandbox."""

from envs.prover.checker import check, coq_available
from envs.prover.env import ProverEnv

__all__ = ["ProverEnv", "check", "coq_available"]
