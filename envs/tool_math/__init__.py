from envs.tool_math.env import ToolMathEnv

__all__ = ["ToolMathEnv"]
