"""The one-line action syntax of every agent env: the characters of each action, shared by the
envs' demonstrations and `envs.actions`, which documents the grammar and parses it strictly."""

SPAWN = "+"  # +NAME INSTRUCTIONS      define a sub-agent
ASSIGN = "@"  # @NAME[,NAME...] TASK    run one instance of each named sub-agent on TASK
SEARCH = "?"  # ?QUERY                   the search tool
CALC = "#"  # #EXPR                      the calculator tool
PYTHON = "$"  # $CODE                    the python tool (envs that offer it: tool_math)
ANSWER = "="  # =TEXT                    final answer (last action of a turn)
OBSERVATION = ">"  # >RESULT             what the runtime appends after a turn
SEP = ";"  # separates the actions of one turn and the items of one observation
FAIL = "fail"  # the result of a sub-agent that returned nothing usable


def observation(items: list[str]) -> str:
    return OBSERVATION + SEP.join(items) + "\n"


def subagent_prompt(instructions: str, task: str) -> str:
    """All a sub-agent sees: its instructions and its task (isolated context)."""
    return f"{instructions} {task}\n"
