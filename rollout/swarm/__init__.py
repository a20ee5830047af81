"""PARL runtime: a trainable orchestrator whose sub-agents (a frozen policy) run in parallel on the rollout workers."""
