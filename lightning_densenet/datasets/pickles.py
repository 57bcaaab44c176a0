"""An unpickler for the official CIFAR files that loads arrays and nothing that runs code."""

from __future__ import annotations

import codecs
import pickle
from typing import Any

import numpy as np

# The only globals the CIFAR pickles need: numpy arrays, dtypes and protocol-2 bytes. Found
# through __reduce__ so numpy 1.x (numpy.core) and 2.x (numpy._core) pickles both resolve.
_PICKLE_GLOBALS = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("multiarray", "_reconstruct"): np.zeros(1).__reduce__()[0],
    ("multiarray", "scalar"): np.float64(0).__reduce__()[0],
    ("_codecs", "encode"): codecs.encode,
}


class ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts of numpy arrays, lists and strings, and nothing that could run code."""

    def find_class(self, module: str, name: str) -> Any:
        key = (module.rsplit(".", 1)[-1] if module.startswith("numpy.") else module, name)
        if key not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name}")
        return _PICKLE_GLOBALS[key]
