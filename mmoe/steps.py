"""Steps under tf.distribute: one step on every replica, and several steps in one compiled loop."""

from __future__ import annotations

import tensorflow as tf

SUM = tf.distribute.ReduceOp.SUM


def summed_over_replicas(strategy: tf.distribute.Strategy, replica_step, batch) -> dict:
    """Runs ``replica_step(*batch)`` on every replica; its values (a dict of tensors) summed
    over the replicas."""
    per_replica = strategy.run(replica_step, args=batch)
    return {key: strategy.reduce(SUM, value, axis=None) for key, value in per_replica.items()}


def summed_steps(step, iterator, steps, sums: dict):
    """Runs ``step`` on up to ``steps`` batches of ``iterator`` in one tf.while_loop (inside a
    tf.function), adding each step's values to ``sums`` (same keys and shapes).

    Returns:
        ``(steps run, sums)``; fewer steps than asked when the iterator runs out.
    """
    done = tf.constant(0)
    for _ in tf.range(steps):
        batch = iterator.get_next_as_optional()  # empty after the last batch
        if not batch.has_value():
            break
        values = step(batch.get_value())
        if set(values) != set(sums):  # checked when traced
            raise ValueError(f"step values {sorted(values)} do not match the sums' keys {sorted(sums)}")
        sums = {key: sums[key] + values[key] for key in sums}
        done += 1
    return done, sums
