"""Procedurally rendered images with exact answers, for vision-language policies."""

from envs.vision.env import VisionEnv

__all__ = ["VisionEnv"]
