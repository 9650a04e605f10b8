"""The :class:`Layer` object: a neural-tangents-shaped ``(init_fn, apply_fn, kernel_fn)`` triple.

Every layer and combinator is a ``Layer``. It unpacks as the triple::

    init_fn, apply_fn, kernel_fn = L.serial(L.Dense(512), L.Activation("relu"), L.Dense(1))

and can be introspected: ``layer.layers`` lists direct children, ``layer.flatten()`` all leaf layers in
order, ``layer.hyperparams`` the constructor arguments of one layer.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from dualact.layers.kernel import Kernel, needs_ntk, normalize_get, select


class Layer:
    """Base class. Subclasses implement ``_init``, ``_apply`` and ``_kernel``.

    * ``init_fn(rng, input_shape) -> (output_shape, params)``
    * ``apply_fn(params, inputs, **kwargs) -> outputs`` (the finite network)
    * ``kernel_fn(x1, x2=None, get=None, **options)`` (the infinite-width kernels)

    >>> import jax.numpy as jnp
    >>> from dualact import layers as L
    >>> init_fn, apply_fn, kernel_fn = L.Dense(3, W_std=2.0, b_std=0.5)
    >>> float(kernel_fn(jnp.ones((1, 4)), get="nngp")[0, 0])   # 2² · 1 + 0.5²
    4.25
    """

    #: constructor arguments shown by ``repr`` and returned by ``hyperparams`` (set by subclasses)
    _hyper: tuple[str, ...] = ()

    # ---- the triple ------------------------------------------------------------------------------

    def init_fn(self, rng, input_shape):
        """Initialise parameters: returns ``(output_shape, params)``."""
        return self._init(rng, tuple(input_shape))

    def apply_fn(self, params, inputs, **kwargs):
        """Run the finite-width network."""
        return self._apply(params, inputs, **kwargs)

    def kernel_fn(self, x1, x2=None, get=None, **options):
        """Infinite-width NNGP / NTK of the layer's outputs.

        Args:
          x1: inputs ``(n1, features)`` or ``(n1, *spatial, channels)``; or a :class:`Kernel`.
          x2: second batch of inputs, or ``None`` for ``kernel_fn(x1, x1)`` with exact diagonals.
          get: ``"nngp"``, ``"ntk"``, a tuple of them (returns a named tuple with those fields),
            or ``None`` (returns the :class:`Kernel` record).
          **options: ``block_size``, ``progress``, ``devices``, ``memory_budget``, ``out`` — see
            :func:`dualact.layers.blocking.compute_kernel`.
        """
        get = normalize_get(get)
        if _is_kernel(x1):
            if x2 is not None:
                raise ValueError("pass either a Kernel or inputs x1 (and x2), not both")
            return _select_any(self._kernel(x1), get)
        from dualact.layers.blocking import compute_kernel

        return compute_kernel(self, x1, x2, get, **options)

    def __call__(self, x1, x2=None, get=None, **options):
        """Same as :meth:`kernel_fn`."""
        return self.kernel_fn(x1, x2, get, **options)

    def __iter__(self):
        return iter((self.init_fn, self.apply_fn, self.kernel_fn))

    def __getitem__(self, i):
        return (self.init_fn, self.apply_fn, self.kernel_fn)[i]

    def __len__(self):
        return 3

    # ---- introspection --------------------------------------------------------------------------

    @property
    def layers(self) -> tuple[Layer, ...]:
        """Direct children (empty for a leaf layer)."""
        return ()

    def flatten(self) -> list[Layer]:
        """All leaf layers, depth first, in the order the network applies them."""
        if not self.layers:
            return [self]
        out: list[Layer] = []
        for child in self.layers:
            out.extend(child.flatten())
        return out

    @property
    def hyperparams(self) -> dict[str, Any]:
        """The layer's constructor arguments (e.g. ``{"out_dim": 512, "W_std": 1.5, ...}``)."""
        return {name: getattr(self, name) for name in self._hyper}

    @property
    def name(self) -> str:
        return type(self).__name__

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={_short(v)}" for k, v in self.hyperparams.items())
        if self.layers:
            inner = ", ".join(repr(c) for c in self.layers)
            return f"{self.name}({inner})"
        return f"{self.name}({args})"

    # ---- copying (caches of compiled functions are not copied) ------------------------------------

    _CACHES = ("_jitted_step", "_piece_fns")

    def __deepcopy__(self, memo):
        import copy

        new = object.__new__(type(self))
        memo[id(self)] = new
        for key, value in self.__dict__.items():
            if key not in self._CACHES:
                new.__dict__[key] = copy.deepcopy(value, memo)
        return new

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in self._CACHES}

    # ---- to implement ---------------------------------------------------------------------------

    def _init(self, rng, input_shape):
        return input_shape, ()

    def _apply(self, params, inputs, **kwargs):
        raise NotImplementedError

    def _kernel(self, k):
        raise NotImplementedError

    # ---- direct (unblocked) evaluation -----------------------------------------------------------

    def _direct(self, x1, x2, get):
        """``inputs -> selected kernels``, one compiled step per leaf layer.

        Each leaf layer's kernel map is jitted on its own (and shared between layers with equal
        hyperparameters), so a depth-100 network compiles two small functions instead of one huge one.
        """
        k = _inputs_jit(x1, x2, track_ntk=needs_ntk(get))
        return _select_any(self._kernel_eager(k), get)

    def _direct_kernel(self, x1, x2, get):
        """The un-jitted computation (used under user transformations such as ``jax.grad``)."""
        return _direct_impl(self, x1, x2, get)

    def _kernel_eager(self, k):
        """Apply the kernel map outside any trace: leaves run their cached compiled step."""
        return _compiled_step(self)(k)

    def _step_key(self):
        """``(key, names, values)``: a hashable description of the layer with its float hyperparameters
        (including activation parameters) left out as ``values``, so that changing ``W_std`` does not
        recompile; ``key`` is ``None`` if some hyperparameter is not hashable."""
        static, names, values = [], [], []
        for name, v in self.hyperparams.items():
            if isinstance(v, float):
                names.append((name,))
                values.append(v)
            elif name == "params" and isinstance(v, dict):
                for pk, pv in sorted(v.items()):
                    if isinstance(pv, float):
                        names.append((name, pk))
                        values.append(pv)
                    else:
                        static.append((name, pk, pv))
            else:
                static.append((name, v))
        try:
            key = (type(self), tuple(_hashable(e) for e in static), tuple(names))
            hash(key)
        except TypeError:
            key = None
        return key, tuple(names), tuple(values)


_STEP_CACHE: dict = {}


def _hashable(v):
    if isinstance(v, (int, float, str, bool, type(None))):
        return v
    if isinstance(v, tuple):
        return tuple(_hashable(e) for e in v)
    if isinstance(v, dict):
        return tuple(sorted((k, _hashable(e)) for k, e in v.items()))
    if isinstance(v, jax.Array):
        raise TypeError("array hyperparameter")
    return ("id", id(v))


def _with_values(template: Layer, names, values) -> Layer:
    """A shallow copy of ``template`` with the given (possibly traced) hyperparameter values."""
    new = object.__new__(type(template))
    new.__dict__.update({k: v for k, v in template.__dict__.items() if k not in Layer._CACHES})
    for name, value in zip(names, values, strict=True):
        if len(name) == 1:
            new.__dict__[name[0]] = value
        else:
            params = dict(new.__dict__[name[0]])
            params[name[1]] = value
            new.__dict__[name[0]] = params
    return new


def _compiled_step(layer: Layer):
    """Kernel map of a leaf layer as a compiled function of the incoming Kernel."""
    key, names, values = layer._step_key()
    if key is None:
        fn = layer.__dict__.get("_jitted_step")
        if fn is None:
            fn = layer.__dict__["_jitted_step"] = jax.jit(layer._kernel)
        return fn
    entry = _STEP_CACHE.get(key)
    if entry is None:
        template = layer

        def step(vals, k):
            return _with_values(template, names, vals)._kernel(k)

        entry = _STEP_CACHE[key] = (template, jax.jit(step))  # keeps ids in the key alive
    fn = entry[1]
    vals = tuple(jnp.asarray(v) for v in values)  # weakly typed: float32 kernels stay float32
    return lambda k: fn(vals, k)


def _direct_impl(layer: Layer, x1, x2, get):
    k = inputs_to_kernel(x1, x2, needs_ntk(get))
    return _select_any(layer._kernel(k), get)


def inputs_to_kernel(x1, x2, track_ntk: bool):
    """Input kernel(s) for an array or a list of arrays (for networks starting with ``parallel``)."""
    if isinstance(x1, (list, tuple)):
        x2s = [None] * len(x1) if x2 is None else list(x2)
        return [inputs_to_kernel(a, b, track_ntk) for a, b in zip(x1, x2s, strict=True)]
    return Kernel.from_inputs(x1, x2, track_ntk=track_ntk)


_inputs_jit = jax.jit(inputs_to_kernel, static_argnames=("track_ntk",))


def _is_kernel(x) -> bool:
    if isinstance(x, Kernel):
        return True
    return isinstance(x, (list, tuple)) and len(x) > 0 and all(isinstance(e, Kernel) for e in x)


def _select_any(k, get):
    if isinstance(k, (list, tuple)):
        return [select(e, get) for e in k]
    return select(k, get)


def _short(v):
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, jax.Array) and v.ndim == 0:
        try:
            return f"{float(v):g}"
        except Exception:  # a tracer
            return "<traced>"
    return repr(v)


def check_channel_last(layer_name: str, channel_axis: int):
    if channel_axis not in (-1,):
        raise NotImplementedError(
            f"{layer_name}: only channel-last layouts (NHWC, channel_axis=-1) are supported"
        )
