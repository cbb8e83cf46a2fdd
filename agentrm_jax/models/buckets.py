"""Shape buckets shared by the sampler and the scorer.

jit compiles one program per distinct shape, so lengths are rounded up to a
small set of buckets. Powers of two keep the set smallest but waste up to half
of a long batch on padding (a 553-token prompt becomes 1024: the prefill does
1.85x the work). Above `fine_from` tokens we therefore step a quarter octave
at a time (256, 320, 384, 448, 512, 640, ...): padding stays under 25% and a
run over prompts of 16..4096 tokens still compiles at most 5 + 4*4 programs.
"""

from __future__ import annotations


def next_power_of_two(x: int, minimum: int = 1) -> int:
    """Smallest power of two >= max(x, minimum) (and >= 1)."""
    return max(minimum, 1 << max(0, int(x) - 1).bit_length())


def bucket_length(n: int, minimum: int = 16, *, fine_from: int = 256, steps_per_octave: int = 4) -> int:
    """Padded length for a sequence of n tokens: a power of two up to `fine_from`, then
    `steps_per_octave` equal steps per doubling. Always >= n and >= minimum."""
    if steps_per_octave < 1 or steps_per_octave & (steps_per_octave - 1):
        raise ValueError(f"steps_per_octave must be a power of two >= 1, got {steps_per_octave}")
    pow2 = next_power_of_two(n, minimum)
    if pow2 <= fine_from or steps_per_octave == 1:
        return pow2
    step = pow2 // 2 // steps_per_octave  # octave (pow2/2, pow2] cut into equal steps
    return max(minimum, -(-int(n) // step) * step)
