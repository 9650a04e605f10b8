"""Finite-width (empirical) NTK and NNGP: Jacobian contraction, NTK-vector products, structured derivatives."""
