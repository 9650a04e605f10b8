"""Repository-wide pytest setup (also seen by ``pytest --doctest-modules dualact codegen``).

Doctests and tests run on the CPU in float64, the precision their printed values assume.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
