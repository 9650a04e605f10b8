"""The dualact symbolic engine: parse, normalise, derive dual kernels, Hermite fallback."""
