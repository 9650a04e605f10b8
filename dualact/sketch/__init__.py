"""Sketches and random features for NNGP/NTK kernels."""
