"""ID dropout: in training, a share of a vocabulary feature's indices become out-of-vocabulary.

With a time split most of a log's future users (or items) are new: their lookups land on the
OOV row, which training barely reaches (only values under ``min_count`` go there). Replacing a
random ``rate`` of the training lookups by their OOV bucket trains that row on ordinary rows, so
a new value's embedding is "an average value" instead of an untrained vector, and the known
values' rows are used less, so they overfit less (the "ID dropout" of cold-start recommenders,
e.g. DropoutNet, Volkovs et al. 2017). Identity outside training, so serving is unchanged.
"""

import keras
from keras import ops

from mmoe.registry import register


@register
class OOVDropout(keras.layers.Layer):
    """Replaces each index by an OOV index with probability ``rate``, in training only.

    A lookup layer with ``num_oov`` OOV buckets puts them at indices ``[0, num_oov)`` (no mask
    token); a dropped index ``i`` goes to bucket ``i % num_oov``, so a value always lands in the
    same bucket.

    Args:
        rate: float in [0, 1). Share of indices replaced.
        num_oov: int >= 1. OOV buckets of the lookup (``features[].num_oov``).
        seed: int or None. Seed of the layer's random stream (None: from Keras' global seed,
            which the training loop sets from ``training.seed``).

    Input: ``(batch, ...)`` integer indices. Output: the same shape and dtype.
    """

    def __init__(self, rate: float, num_oov: int = 1, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"`rate` must be in [0, 1), got {rate!r}")
        if int(num_oov) < 1:
            raise ValueError(f"`num_oov` must be >= 1, got {num_oov!r}")
        self.rate = float(rate)
        self.num_oov = int(num_oov)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, indices, training=None):
        if not training or self.rate == 0.0:
            return indices
        dropped = keras.random.uniform(ops.shape(indices), seed=self.seed_generator) < self.rate
        oov = indices % ops.cast(self.num_oov, indices.dtype) if self.num_oov > 1 else ops.zeros_like(indices)
        return ops.where(dropped, oov, indices)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "num_oov": self.num_oov, "seed": self.seed}
