"""The dualact code generator: SymPy derivations to readable, numerically stable JAX modules."""
