"""Command-line overrides of a spec's training settings, applied in one place.

Plain Python (no TensorFlow): ``mmoe train`` applies them to the spec it hands to :func:`mmoe.train.train`, and
:func:`mmoe.baselines.train_baseline` goes through the same function.
"""

from __future__ import annotations

import dataclasses

from feature_specs.spec import FeatureSpec


def with_overrides(
    spec: FeatureSpec,
    epochs: int | None = None,
    batch_size: int | None = None,
    architecture: str | None = None,
) -> FeatureSpec:
    """``spec`` with the given settings replaced; None (or 0) keeps the spec's own.

    Args:
        spec: FeatureSpec.
        epochs: ``training.epochs``, the epochs of the whole run.
        batch_size: ``training.batch_size``, the global batch (split among replicas).
        architecture: ``model.architecture``, e.g. ``shared_bottom`` (``mmoe train --model``).

    Returns:
        A new FeatureSpec; ``spec`` itself when nothing is overridden.
    """
    training = {key: value for key, value in (("epochs", epochs), ("batch_size", batch_size)) if value}
    if training:
        spec = dataclasses.replace(spec, training=dataclasses.replace(spec.training, **training))
    if architecture and architecture != spec.model.architecture:
        spec = dataclasses.replace(spec, model=dataclasses.replace(spec.model, architecture=architecture))
    return spec
