"""Runtime support for generated kernels (safe numerics, Hermite series evaluation, DualKernel)."""
