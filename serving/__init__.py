"""Serving: SavedModel export and signatures, the REST server and its client."""
