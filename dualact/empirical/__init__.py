"""Finite-width (empirical) NTK and NNGP: Jacobian contraction, NTK-vector products, structured derivatives.

``ntk_fn(apply_fn, implementation=...)`` works for any JAX function ``apply_fn(params, x, **kwargs)`` with a
pytree of parameters; the three implementations agree to rounding and follow neural-tangents' semantics for
``trace_axes``, ``diagonal_axes`` and ``vmap_axes``. ``monte_carlo_kernel_fn`` averages empirical kernels over
initializations (→ infinite-width kernels); ``adapters`` plug Flax and Equinox models in.

>>> from dualact import empirical
>>> sorted(empirical.IMPLEMENTATIONS)
['jacobian', 'ntk_vector', 'structured']
"""

from dualact.empirical._axes import EmpiricalKernelError
from dualact.empirical.adapters import (
    equinox_init_fn,
    flax_nnx_init_fn,
    from_equinox,
    from_flax_linen,
    from_flax_nnx,
)
from dualact.empirical.auto import Cost, choose_implementation, estimate_costs
from dualact.empirical.kernel_fns import IMPLEMENTATIONS, nngp_fn, ntk_fn
from dualact.empirical.monte_carlo import MonteCarloKernel, monte_carlo_kernel_fn

__all__ = [
    "IMPLEMENTATIONS",
    "Cost",
    "EmpiricalKernelError",
    "MonteCarloKernel",
    "choose_implementation",
    "equinox_init_fn",
    "estimate_costs",
    "flax_nnx_init_fn",
    "from_equinox",
    "from_flax_linen",
    "from_flax_nnx",
    "monte_carlo_kernel_fn",
    "nngp_fn",
    "ntk_fn",
]
