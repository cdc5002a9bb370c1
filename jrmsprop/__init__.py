"""jrmsprop: RMSprop for JAX that reproduces TF/Keras, Keras 3, PyTorch and TF1 exactly."""

from jrmsprop import compat
from jrmsprop._src.clipping import keras_clipping
from jrmsprop._src.optimizer import RMSprop
from jrmsprop._src.packing import PackedTree, pack, unpack
from jrmsprop._src.sparse import IndexedSlices, densify
from jrmsprop._src.transform import RMSpropState, rmsprop
from jrmsprop._src.update_and_apply import update_and_apply
from jrmsprop._src.variable import Variable

__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "keras":  # a Keras 3 optimizer, imported on first use: jrmsprop never imports keras
        import importlib

        return importlib.import_module("jrmsprop.keras")
    raise AttributeError(f"module 'jrmsprop' has no attribute {name!r}")


__all__ = (
    "IndexedSlices",
    "PackedTree",
    "RMSprop",
    "RMSpropState",
    "Variable",
    "compat",
    "densify",
    "keras_clipping",
    "pack",
    "rmsprop",
    "unpack",
    "update_and_apply",
)
