"""Infinite-width layer API (neural-tangents-shaped): serial, Dense, Conv, pooling, activations."""
