"""Builders for SFT tests: expert demos, a tiny BPE tokenizer with a ChatML template trained on their text
(a few hundred tokens per demo instead of the bundled vocabulary's 49152-wide logits), a tiny model
directory that uses it."""

from __future__ import annotations

from pathlib import Path

from agentrm_jax.agents.collect import expert_episode
from agentrm_jax.agents.factory import make_env
from agentrm_jax.records import write_jsonl
from agentrm_jax.sft.data import sft_messages

CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def demos(env: str = "tool_query", seeds=range(4)):
    """Clean expert demos of `env`."""
    return [expert_episode(make_env(env, split="test"), s, split="test") for s in seeds]


def tiny_tokenizer(trajectories, vocab_size: int = 1200):
    """A byte-level BPE (transformers' fast tokenizer) trained on the chat text of `trajectories`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [m["content"] for t in trajectories for m in sft_messages(t)[0]]
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|im_start|>",
                                                                        "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(texts, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  bos_token="<|im_start|>")
    tok.chat_template = CHATML
    return tok


def tiny_policy_dir(directory, tokenizer, seed: int = 0) -> Path:
    """A random tiny LlamaForCausalLM over `tokenizer`'s vocabulary, saved as an HF directory."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
    from trainer_helpers import save_tiny_model

    return save_tiny_model(directory, tokenizer, seed=seed, vocab_size=len(tokenizer), hidden_size=64,
                           intermediate_size=128, num_heads=4, num_kv_heads=2, head_dim=16, num_layers=2)


def write_demos(path, trajectories) -> Path:
    write_jsonl(path, trajectories)
    return Path(path)


def sft_command(config) -> list[str]:
    """`agentrm sft --config CONFIG --no-progress` in a child python."""
    import sys

    return [sys.executable, "-m", "agentrm_jax.cli", "sft", "--config", str(config), "--no-progress"]


def logged_steps(metrics) -> list[int]:
    """Steps of the complete lines of a metrics.jsonl that a running trainer is appending to."""
    import json

    metrics = Path(metrics)
    if not metrics.exists():
        return []
    return [json.loads(line)["step"] for line in metrics.read_text().splitlines() if line.endswith("}")]


def kill_after_step(command, metrics, step: int, *, env, cwd, timeout: float = 300):
    """Start `command`, SIGKILL it once `metrics` logs `step` (or later); returns (returncode, stderr,
    steps logged at the kill)."""
    import signal
    import subprocess
    import time

    child = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
    deadline = time.monotonic() + timeout
    while child.poll() is None and time.monotonic() < deadline:
        if any(s >= step for s in logged_steps(metrics)):
            child.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    stderr = child.communicate(timeout=60)[1]
    return child.returncode, stderr, logged_steps(metrics)
