"""What the two inference profiles share (profile_inference.py for PyTorch, profile_keras.py for
Keras): the settings they measure under, and the table they print, which bench.py reads.
Framework-free: each profile imports only its own framework."""

from __future__ import annotations

THREADS, SIZE, REPEATS, TOP = 2, 224, {1: 10, 16: 3}, 8  # REPEATS: forward passes a batch size


def print_table(batch: int, wall: float, by_op: dict[str, float], measure: str) -> None:
    """One batch size's profile: its wall time a forward pass, then the TOP operators by
    `measure` (milliseconds a forward pass), each with its share of all profiled."""
    profiled = sum(by_op.values())
    print(f"batch {batch}: {wall:.0f} ms a forward pass; {measure}:")
    for name, ms in sorted(by_op.items(), key=lambda item: -item[1])[:TOP]:
        print(f"  {name:<42} {ms:8.1f} ms  {100 * ms / profiled:5.1f}%")
