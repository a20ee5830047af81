"""Tasks from a dataset file (Parquet or JSONL), and a generator of word problems to make one."""

from envs.dataset.env import DatasetEnv

__all__ = ["DatasetEnv"]
