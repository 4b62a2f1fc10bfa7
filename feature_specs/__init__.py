"""Feature specs: the one declaration of features, labels and tasks that every stage reads."""

from feature_specs.artifacts import NumericStats, Statistics, Workdir
from feature_specs.spec import (
    Column,
    Feature,
    FeatureSpec,
    Ranking,
    Split,
    SpecError,
    Task,
)
from feature_specs.spec_reader import bundled_spec_path, load_spec, spec_from_dict

__all__ = [
    "Column", "Feature", "FeatureSpec", "NumericStats", "Ranking", "Split", "SpecError",
    "Statistics", "Task", "Workdir", "bundled_spec_path", "load_spec", "spec_from_dict",
]
