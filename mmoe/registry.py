"""One decorator that registers every public layer as Keras-serializable.

Every layer class in this package is decorated with :func:`register`, so ``.keras`` files and
SavedModels that contain them reload without ``custom_objects``.
"""

import keras

PACKAGE = "mmoe"


def register(cls):
    """Registers ``cls`` under ``mmoe>ClassName`` for Keras (de)serialization."""
    return keras.saving.register_keras_serializable(package=PACKAGE)(cls)
