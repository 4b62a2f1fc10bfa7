"""Do the gates choose? Diagnostics of the serving model's ``gate_weights`` over an eval split.

An MMoE whose gates put 1/E on every expert for every example is a shared-bottom model with
extra steps. Three numbers say whether that is what was learned:

* **Entropy against uniform**: each example's gate entropy divided by ``log E`` (1: uniform,
  0: one expert). Reported as the mean and the 10th/50th/90th percentiles over examples, so a
  gate that is sharp for some examples and flat for others is visible too.
* **Task divergence**: the Jensen-Shannon divergence (nats, at most ``log 2``) between two tasks'
  gate distributions for the same example, averaged over examples, for every pair of tasks.
  0: the tasks mix the experts the same way, and the "multi" in multi-gate buys nothing.
* **Dead experts**: per task and expert, the share of examples that give the expert a weight
  above ``USE_SHARE_OF_UNIFORM / E`` (a tenth of what a uniform gate gives it); an expert used by
  fewer than ``DEAD_SHARE`` of the examples is dead for that task.

All functions are NumPy and take ``(n, tasks, experts)`` arrays whose last axis sums to 1.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

# An expert counts as used by an example when its weight is above this share of a uniform
# gate's weight (1/E): 0.1 means "a tenth of what a uniform gate would give it".
USE_SHARE_OF_UNIFORM = 0.1
# ... and as dead for a task when fewer than this share of examples use it.
DEAD_SHARE = 0.01
EPS = 1e-12


def _entropy(weights: np.ndarray) -> np.ndarray:
    """Entropy in nats over the last axis."""
    return -np.sum(weights * np.log(np.clip(weights, EPS, 1.0)), axis=-1)


def normalized_entropy(gate_weights: np.ndarray) -> np.ndarray:
    """Per-example gate entropy over ``log E``: ``(n, tasks)`` in [0, 1], 1 = uniform.

    Args:
        gate_weights: ``(n, tasks, experts)``, each row summing to 1.
    """
    weights = np.asarray(gate_weights, dtype=np.float64)
    experts = weights.shape[-1]
    if experts < 2:
        return np.zeros(weights.shape[:-1])
    return _entropy(weights) / math.log(experts)


def jensen_shannon(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen-Shannon divergence in nats between distributions on the last axis (0 .. log 2).

    Args:
        p, q: ``(..., experts)`` each, rows summing to 1.
    """
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    middle = 0.5 * (p + q)
    return _entropy(middle) - 0.5 * (_entropy(p) + _entropy(q))


def task_divergence(gate_weights: np.ndarray, task_names) -> dict[str, float]:
    """Mean over examples of the JS divergence between each pair of tasks' gates.

    Args:
        gate_weights: ``(n, tasks, experts)``. task_names: the tasks, in the array's order.

    Returns:
        ``{"<task a>|<task b>": mean JS in nats}`` for every pair, in task order.
    """
    weights = np.asarray(gate_weights, dtype=np.float64)
    return {
        f"{task_names[a]}|{task_names[b]}": float(jensen_shannon(weights[:, a], weights[:, b]).mean())
        for a, b in itertools.combinations(range(len(task_names)), 2)
    }


def expert_use(gate_weights: np.ndarray, share_of_uniform: float = USE_SHARE_OF_UNIFORM) -> np.ndarray:
    """Share of examples giving each expert a weight above ``share_of_uniform / E``: ``(tasks, experts)``.

    Args:
        gate_weights: ``(n, tasks, experts)``.
        share_of_uniform: float. The threshold as a share of a uniform gate's weight ``1/E``.
    """
    weights = np.asarray(gate_weights, dtype=np.float64)
    threshold = share_of_uniform / weights.shape[-1]
    return (weights > threshold).mean(axis=0)


def gate_diagnostics(gate_weights: np.ndarray, task_names, shared_experts: int | None = None) -> dict:
    """Entropy against uniform, task divergence and dead experts of one model's gates.

    Args:
        gate_weights: ``(n, tasks, experts)`` from the serving model's ``gate_weights`` output.
        task_names: the tasks in the array's order.
        shared_experts: for CGC/PLE, whose gates list each task's own experts first and the shared
            ones last: the number of shared experts. The divergence between tasks is then measured
            on the shared experts (renormalized), the only columns that are the same experts for
            every task. None: every column is shared (MMoE, OMoE).

    Returns:
        ``{"tasks": {task: {"entropy_vs_uniform": {"mean", "p10", "p50", "p90"},
        "expert_use": [per expert], "dead_experts": int}}, "divergence": {"a|b": JS},
        "max_divergence": log 2, "experts": E, "examples": n, "use_threshold": ...}``.
    """
    weights = np.asarray(gate_weights, dtype=np.float64)
    if weights.ndim != 3 or weights.shape[1] != len(task_names):
        raise ValueError(f"gate_weights must be (n, {len(task_names)}, experts), got shape {weights.shape}")
    entropy = normalized_entropy(weights)  # (n, tasks)
    use = expert_use(weights)  # (tasks, experts)
    tasks = {}
    for t, task in enumerate(task_names):
        p10, p50, p90 = np.percentile(entropy[:, t], [10, 50, 90])
        tasks[task] = {
            "entropy_vs_uniform": {"mean": float(entropy[:, t].mean()), "p10": float(p10), "p50": float(p50),
                                   "p90": float(p90)},
            "expert_use": [float(u) for u in use[t]],
            "dead_experts": int((use[t] < DEAD_SHARE).sum()),
        }
    shared = weights
    if shared_experts is not None:
        shared = weights[..., -shared_experts:]
        shared = shared / np.clip(shared.sum(axis=-1, keepdims=True), EPS, None)
    return {
        "tasks": tasks,
        "divergence": task_divergence(shared, list(task_names)),
        "max_divergence": math.log(2.0),
        "experts": int(weights.shape[-1]),
        "examples": int(weights.shape[0]),
        "use_threshold": f"weight > {USE_SHARE_OF_UNIFORM:g}/E; dead: used by < {DEAD_SHARE:.0%} of examples",
    }


# Labels of :func:`specialisation`: gates this close to uniform, or tasks this close to one
# mixture, do not choose.
NEAR_UNIFORM = 0.95          # mean entropy / log E above this: every expert gets about 1/E
SAME_MIXTURE = 0.01          # mean JS divergence (nats) below this: the tasks' gates agree


def specialisation(entropy_vs_uniform: float, divergence: float | None) -> str:
    """``uniform`` (the gates do not choose), ``shared mixture`` (they choose, every task alike)
    or ``specialised`` (they choose, and differently per task)."""
    if entropy_vs_uniform > NEAR_UNIFORM:
        return "uniform"
    if divergence is not None and divergence < SAME_MIXTURE:
        return "shared mixture"
    return "specialised"


def summarize_gates(per_seed: list[dict]) -> dict:
    """Means over seeds of :func:`gate_diagnostics` dicts, and a :func:`specialisation` label.

    Returns:
        ``{"tasks": {task: {"entropy_vs_uniform": mean, "dead_experts": mean}},
        "divergence": {pair: mean}, "specialisation": label, "seeds": n}``.
    """
    first = per_seed[0]
    tasks = {
        task: {
            "entropy_vs_uniform": float(np.mean([d["tasks"][task]["entropy_vs_uniform"]["mean"] for d in per_seed])),
            "dead_experts": float(np.mean([d["tasks"][task]["dead_experts"] for d in per_seed])),
        }
        for task in first["tasks"]
    }
    divergence = {pair: float(np.mean([d["divergence"][pair] for d in per_seed])) for pair in first["divergence"]}
    entropy = float(np.mean([t["entropy_vs_uniform"] for t in tasks.values()]))
    mean_divergence = float(np.mean(list(divergence.values()))) if divergence else None
    return {
        "tasks": tasks, "divergence": divergence, "experts": first["experts"],
        "specialisation": specialisation(entropy, mean_divergence), "seeds": len(per_seed),
    }
