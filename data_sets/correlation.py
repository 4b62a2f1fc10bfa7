"""The MMoE paper's synthetic data with controllable task correlation (Ma et al., KDD 2018, §3.2).

``x ~ N(0, I_d)``; orthogonal unit vectors ``u1, u2``; ``w1 = c·u1``,
``w2 = c·(p·u1 + sqrt(1 − p²)·u2)``; for each task
``y_k = w_kᵀx + Σ_{i=1..m} sin(α_i·w_kᵀx + β_i) + ε``, ``ε ~ N(0, σ²)``.

The paper leaves ``m, c, α, β`` open; the defaults here are ``m = 10, c = 1, α_i = i,
β_i = (i − 1)², σ = 0.01`` for ``i = 1..m``: the values of Google Research's generator for this
experiment (dselect_k_moe, ``synthetic_data.py``: ``alphas = range(1, m + 1)``,
``betas = [i ** 2 for i in range(m)]``). ``p`` is the Pearson correlation of the two tasks' linear parts; the sines make the
labels' own correlation lower and non-linear, as in the paper.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class CorrelationDataConfig:
    """Constants of the generator (see the module docstring)."""

    dim: int = 100
    num_sines: int = 10
    scale: float = 1.0
    noise_std: float = 0.01
    alpha_scale: float = 1.0  # alpha_i = alpha_scale * i; below 1 the sines are slower, learnable

    def as_dict(self) -> dict:
        return {**asdict(self), "alpha_i": f"{self.alpha_scale:g} * i", "beta_i": "(i-1)**2"}


def make_task_weights(correlation: float, rng: np.random.Generator, config: CorrelationDataConfig):
    """``(w1, w2)``, each ``(dim,)``, whose cosine similarity is ``correlation``."""
    if not -1.0 <= correlation <= 1.0:
        raise ValueError(f"`correlation` must be in [-1, 1], got {correlation!r}")
    basis, _ = np.linalg.qr(rng.normal(size=(config.dim, 2)))  # two orthonormal columns
    u1, u2 = basis[:, 0], basis[:, 1]
    w1 = config.scale * u1
    w2 = config.scale * (correlation * u1 + np.sqrt(1.0 - correlation**2) * u2)
    return w1, w2


def make_correlated_tasks(
    num_examples: int, correlation: float, seed: int, config: CorrelationDataConfig = CorrelationDataConfig()
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draws one data set: fresh task weights and examples for ``seed``.

    Returns:
        ``x`` ``(n, dim)`` float32, ``y1`` ``(n,)`` float32, ``y2`` ``(n,)`` float32.
    """
    rng = np.random.default_rng(seed)
    w1, w2 = make_task_weights(correlation, rng, config)
    x = rng.normal(size=(num_examples, config.dim))
    index = np.arange(1, config.num_sines + 1, dtype=np.float64)
    alpha, beta = config.alpha_scale * index, (index - 1.0) ** 2

    def label(w):
        linear = x @ w  # (n,)
        sines = np.sin(np.outer(linear, alpha) + beta).sum(axis=1)
        return linear + sines + rng.normal(scale=config.noise_std, size=num_examples)

    return x.astype(np.float32), label(w1).astype(np.float32), label(w2).astype(np.float32)
