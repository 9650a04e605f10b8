import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)


@pytest.fixture(scope="module")
def private_derivation_cache(tmp_path_factory):
    """Keep the user's derivation cache out of a test module (``pytestmark = usefixtures(...)``)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("DUALACT_CACHE_DIR", str(tmp_path_factory.mktemp("dualact-cache")))
    yield
    mp.undo()
