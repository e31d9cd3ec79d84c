import pytest

import lastreid  # noqa: F401  (patches fastreid before any test imports it)
from lastreid import synthetic


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """A datasets root holding the `tiny` synthetic LaST, PRCC and Celeb-reID trees
    (seed 0), written once per session. `lastreid.synthetic.read_counts(root)` gives
    what the generator wrote."""
    root = tmp_path_factory.mktemp("datasets")
    synthetic.write_all(str(root), preset="tiny", seed=0)
    return root
