"""Policies: things that propose the agent's next step ("Thought: ...\\nAction: ...") for chat contexts.

Every policy implements `PolicySampler.sample(contexts, n, temperature, seed)`:
for each context (a list of chat messages, see `prompts.build_messages`) it
returns n step texts. One file per kind:

- `base`: the `PolicySampler` protocol, `PolicyStats`, and the shared helpers
  `turn_of` and `context_key`.
- `jax_policy`: `JaxPolicy`, our in-process JAX model through `Sampler` (the n
  samples of a context share one prefill). Decoding stops as soon as a complete
  action line has been generated (checked between decode chunks together with
  the stop strings "\\nObservation" / "\\nThought"), and the text is cut right
  after the first action line.
- `openai_policy`: `OpenAIPolicy`, any OpenAI-compatible /v1/chat/completions
  server (vLLM, llama.cpp, `agentrm serve`, ...), standard library only, with
  bounded retries and clear `PolicyServerError`s. The API key is read from an
  environment variable at request time and never stored, logged or echoed.
- `scripted`: `ScriptedPolicy`, a fixed action list (indexed by turn) or a
  callable (e.g. an env's expert plan), with optional seeded noise;
  `RandomPolicy`: uniform over the available actions. Both are deterministic
  for a given seed.
- `sampler_policy`: `SamplerPolicy`, a minimal `PolicySampler` over a
  `Sampler` (free-form replies), for judges.

Every name is re-exported here: `from agentrm_jax.agents.policies import JaxPolicy` works.
"""

# Messages (the chat-context type alias) stays importable from here, as it was from the old module.
from agentrm_jax.agents.policies.base import Messages, PolicySampler, PolicyStats, context_key, turn_of  # noqa: F401
from agentrm_jax.agents.policies.jax_policy import JaxPolicy
from agentrm_jax.agents.policies.openai_policy import OpenAIPolicy, PolicyServerError
from agentrm_jax.agents.policies.sampler_policy import SamplerPolicy
from agentrm_jax.agents.policies.scripted import RandomPolicy, ScriptedPolicy

__all__ = [
    "JaxPolicy", "OpenAIPolicy", "PolicySampler", "PolicyServerError", "PolicyStats", "RandomPolicy",
    "SamplerPolicy", "ScriptedPolicy", "context_key", "turn_of",
]
