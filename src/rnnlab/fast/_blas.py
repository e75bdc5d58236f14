"""NumPy's own OpenBLAS, called from compiled loops: the address of its ``cblas_sgemm``.

The per-step product of a loop (h_prev W_hh^T, or dA W_hh in the backward) is one
small GEMM; called from Python, each step also pays NumPy's call, a view or two and
the kernel's dispatch, about 10-20 us a step. The compiled loops of
``fast/_compiled.py`` (``*_loop_blas``, ``*_chunk_blas``) call the BLAS themselves,
through this address, so a whole direction runs without Python between the steps
(RNN inference N=32, T=100, D=64, H=256 on the 2-core AVX2 machine, interleaved,
best / median of 30: 6.52 / 7.83 ms against 7.64 / 10.31 ms from Python).

NumPy's wheels bundle OpenBLAS under a prefixed name with 64-bit integers
(``scipy_cblas_sgemm64_``); other builds export ``cblas_sgemm64_`` (64-bit) or
plain ``cblas_sgemm`` (32-bit); the integer width the name implies is checked against the
build string (``USE64BITINT`` in ``openblas_get_config``). The library is the one threadpoolctl reports as
NumPy's OpenBLAS, so the thread count ``_threads`` sets is the one these calls get.
Anything else (no threadpoolctl, a BLAS other than OpenBLAS, no symbol found)
leaves ``ADDRESS = None`` and the loops step from Python as before.
``RNNLAB_BLAS_LOOPS=0`` turns the compiled calls off.
"""
from __future__ import annotations

import ctypes
import os

# (symbol, 64-bit integers), tried in order
_SYMBOLS = (("scipy_cblas_sgemm64_", True), ("cblas_sgemm64_", True),
            ("scipy_cblas_sgemm", False), ("cblas_sgemm", False))

ADDRESS = None        # cblas_sgemm's address in NumPy's OpenBLAS, or None
WIDE = False          # whether its integers are 64-bit
SYMBOL = None
PATH = None


def _numpy_openblas():
    """The file of the OpenBLAS NumPy is linked with, as threadpoolctl finds it, or None."""
    try:
        import numpy as np
        from threadpoolctl import ThreadpoolController
        controllers = ThreadpoolController().select(internal_api="openblas").lib_controllers
    except Exception:
        return None
    numpy_dir = os.path.dirname(os.path.dirname(os.path.abspath(np.__file__)))
    for c in controllers:            # NumPy's own copy first (numpy.libs, numpy/.dylibs, ...)
        if os.path.basename(os.path.dirname(c.filepath)).startswith("numpy") or \
                os.path.dirname(c.filepath).startswith(os.path.join(numpy_dir, "numpy")):
            return c.filepath
    return controllers[0].filepath if len(controllers) == 1 else None


def _load():
    global ADDRESS, WIDE, SYMBOL, PATH
    if os.environ.get("RNNLAB_BLAS_LOOPS", "1") == "0":
        return
    path = _numpy_openblas()
    if path is None:
        return
    try:
        lib = ctypes.CDLL(path)
    except OSError:
        return
    found = _pick(lib)
    if found is not None:
        ADDRESS, WIDE, SYMBOL = found
        PATH = path


def _pick(lib):
    """(address, 64-bit integers, symbol) of the first ``_SYMBOLS`` name lib exports, or None:
    none exported, or the build string says the other integer width (then do not guess)."""
    for name, wide in _SYMBOLS:
        fn = getattr(lib, name, None)
        if fn is None:
            continue
        if _config_wide(lib) not in (None, wide):
            return None
        return ctypes.cast(fn, ctypes.c_void_p).value, wide, name
    return None


def _config_wide(lib):
    """Whether OpenBLAS's own build string says 64-bit integers (``USE64BITINT``), or None if it
    has no ``openblas_get_config`` under any of the names tried."""
    for name in ("scipy_openblas_get_config64_", "openblas_get_config64_", "scipy_openblas_get_config",
                 "openblas_get_config"):
        fn = getattr(lib, name, None)
        if fn is not None:
            fn.restype = ctypes.c_char_p
            fn.argtypes = []
            return b"USE64BITINT" in (fn() or b"")
    return None


_load()


def describe():
    """What ``rnnlab bench`` reports."""
    return {"symbol": SYMBOL, "ilp64": WIDE if SYMBOL else None, "path": PATH}
