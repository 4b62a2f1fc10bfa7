"""Serving: the ranking score, SavedModel export and signatures."""
