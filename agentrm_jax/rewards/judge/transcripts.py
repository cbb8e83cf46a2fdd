"""What a judge is shown: the plain-text transcript of a trajectory (`render_transcript`) and the prompt templates.

The transcript holds the instruction and, for each step, its thought, action
and observation. Outcome fields (success, progress, value) are never shown.
The templates wrap it into the question each judge asks: a 0-10 rating
(pointwise), the best of numbered candidates (listwise), a yes/no question
(logit).
"""

from __future__ import annotations

from agentrm_jax.records import Trajectory, format_step

__all__ = ["DEFAULT_LOGIT_QUESTION", "LISTWISE_TEMPLATE", "LOGIT_TEMPLATE", "Messages", "POINTWISE_TEMPLATE",
           "render_transcript"]

Messages = list[dict[str, str]]


def _clip(text: str, max_chars: int | None) -> str:
    if max_chars is None or len(text) <= max_chars:
        return text
    return text[:max_chars] + " [...]"


def render_transcript(trajectory: Trajectory, *, max_steps_shown: int | None = None,
                      first_step: int = 0, max_field_chars: int | None = None,
                      show_instruction: bool = True) -> str:
    """The plain-text record of a trajectory that a judge reads.

    Shows the instruction, then each step as "[Step k]" with its thought and
    action (`format_step`) and the observation. `max_steps_shown` keeps only the
    most recent steps (and says how many were left out); `first_step` drops the
    steps before it; `max_field_chars` clips long fields; `show_instruction=False`
    leaves the instruction out (a listwise prompt shows it once for all candidates).
    """
    steps = list(enumerate(trajectory.steps))[first_step:]
    if max_steps_shown is not None and len(steps) > max_steps_shown:
        steps = steps[len(steps) - max_steps_shown:] if max_steps_shown > 0 else []
    lines = (["Task given to the agent:", _clip(trajectory.instruction.strip(), max_field_chars), ""]
             if show_instruction else [])
    if not trajectory.steps:
        lines.append("The agent has not taken any step yet.")
        return "\n".join(lines)
    omitted = steps[0][0] if steps else len(trajectory.steps)
    lines.append("What the agent did:")
    if omitted:
        lines.append(f"({omitted} earlier step{'s' if omitted != 1 else ''} not shown)")
    for k, step in steps:
        lines.append(f"[Step {k + 1}]")
        lines.append(format_step(_clip(step.thought.strip(), max_field_chars), _clip(step.action.strip(),
                                                                                      max_field_chars)))
        if step.observation:
            lines.append(f"Observation: {_clip(step.observation.strip(), max_field_chars)}")
    return "\n".join(lines)


POINTWISE_TEMPLATE = (
    "You are evaluating an AI agent that acts in a text-based environment. Below are the task it was given "
    "and the steps it has taken so far.\n\n"
    "{transcript}\n\n"
    "How close is the agent to completing the task? Rate its progress from 0 to 10: 0 means no useful "
    "progress or moving away from the goal, 10 means the task is complete. Reply with \"Score: N\" on the "
    "first line (N a number from 0 to 10), then one sentence explaining why.")

LISTWISE_TEMPLATE = (
    "You are comparing {count} attempts by an AI agent at the same task in a text-based environment. "
    "Each attempt is a candidate, numbered from 1 to {count}.\n\n"
    "{candidates}\n\n"
    "Which candidate has made the most progress toward completing the task correctly? Reply with "
    "\"Best: K\" on the first line, where K is the candidate number (1 to {count}), then one sentence "
    "explaining why.")

DEFAULT_LOGIT_QUESTION = "Is this trajectory on track to complete the task? Answer Yes or No."

LOGIT_TEMPLATE = (
    "Below is the record of an AI agent working on a task in a text-based environment.\n\n"
    "{transcript}\n\n"
    "{question}")
