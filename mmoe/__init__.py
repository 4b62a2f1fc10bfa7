"""Keras 3 Multi-gate Mixture-of-Experts for multi-task ranking.

Submodules import TensorFlow/Keras on use; ``import mmoe`` alone stays cheap.
"""
