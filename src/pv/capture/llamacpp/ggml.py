"""ggml's tensor struct, read through ctypes, and copying a tensor's values out of it.

``llama-cpp-python`` hands its graph-evaluation callback a bare ``ggml_tensor *``
and defines no ctypes type for it, so the struct is declared here from the
``ggml.h`` bundled with the package (llama-cpp-python 0.3.x)::

    enum ggml_type type; ggml_backend_buffer * buffer;
    int64_t ne[4]; size_t nb[4]; enum ggml_op op; int32_t op_params[16];
    int32_t flags; ggml_tensor * src[10]; ggml_tensor * view_src; size_t view_offs;
    void * data; char name[64]; void * extra; char padding[8];

A different ggml would silently misread every field, so :func:`check_layout`
compares ``sizeof`` with ``ggml_tensor_overhead()`` (struct plus ggml's object
header) and refuses to go on when they disagree. Op and type names come from
ggml itself (``ggml_op_name``, ``ggml_type_name``), never from a copied enum.

``ne[0]`` is the fastest-varying dimension: a ggml tensor with
``ne = [D, NH, S, 1]`` is the row-major numpy array ``[S, NH, D]``.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

import numpy as np

from pv.errors import PvError

MAX_DIMS = 4
MAX_SRC = 10
MAX_OP_PARAMS = 64
MAX_NAME = 64
#: ``sizeof(struct ggml_object)`` in the same ggml: offs, size, next, type, padding[4].
OBJECT_SIZE = 32


class GgmlTensor(ctypes.Structure):
    pass


GgmlTensor._fields_ = [
    ("type", ctypes.c_int),
    ("buffer", ctypes.c_void_p),
    ("ne", ctypes.c_int64 * MAX_DIMS),
    ("nb", ctypes.c_size_t * MAX_DIMS),
    ("op", ctypes.c_int),
    ("op_params", ctypes.c_int32 * (MAX_OP_PARAMS // 4)),
    ("flags", ctypes.c_int32),
    ("src", ctypes.POINTER(GgmlTensor) * MAX_SRC),
    ("view_src", ctypes.POINTER(GgmlTensor)),
    ("view_offs", ctypes.c_size_t),
    ("data", ctypes.c_void_p),
    ("name", ctypes.c_char * MAX_NAME),
    ("extra", ctypes.c_void_p),
    ("padding", ctypes.c_char * 8),
]

#: ggml element types pv reads (``ggml_type`` values, stable in ggml's enum).
F32, F16, I32 = 0, 1, 26
_NUMPY: dict[int, np.dtype[Any]] = {F32: np.dtype("<f4"), F16: np.dtype("<f2"), I32: np.dtype("<i4")}


@dataclass
class Ggml:
    """The few ggml functions pv calls, bound once from the shared library."""

    lib: Any

    def __post_init__(self) -> None:
        lib = self.lib
        lib.ggml_op_name.argtypes = [ctypes.c_int]
        lib.ggml_op_name.restype = ctypes.c_char_p
        lib.ggml_type_name.argtypes = [ctypes.c_int]
        lib.ggml_type_name.restype = ctypes.c_char_p
        lib.ggml_tensor_overhead.argtypes = []
        lib.ggml_tensor_overhead.restype = ctypes.c_size_t
        lib.ggml_nbytes.argtypes = [ctypes.c_void_p]
        lib.ggml_nbytes.restype = ctypes.c_size_t
        lib.ggml_backend_tensor_get.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t,
                                                ctypes.c_size_t]
        lib.ggml_backend_tensor_get.restype = None
        lib.ggml_backend_tensor_set.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t,
                                                ctypes.c_size_t]
        lib.ggml_backend_tensor_set.restype = None
        self._ops: dict[int, str] = {}

    def op_name(self, op: int) -> str:
        name = self._ops.get(op)
        if name is None:
            name = self._ops[op] = (self.lib.ggml_op_name(op) or b"?").decode()
        return name

    def type_name(self, type_: int) -> str:
        return str((self.lib.ggml_type_name(type_) or b"?").decode())

    def check_layout(self) -> None:
        """Refuse a ggml whose tensor struct is not the one declared here."""
        overhead = int(self.lib.ggml_tensor_overhead())
        expected = ctypes.sizeof(GgmlTensor) + OBJECT_SIZE
        if overhead != expected:
            raise PvError(
                f"llama.cpp's ggml_tensor is {overhead - OBJECT_SIZE} bytes, pv's ctypes copy is "
                f"{ctypes.sizeof(GgmlTensor)}: this llama-cpp-python is not supported"
            )

    def read(self, ptr: int, tensor: GgmlTensor) -> np.ndarray | None:
        """A private float32 copy of the tensor (row-major, ggml dims reversed), None if unreadable.

        The bytes are copied through ``ggml_backend_tensor_get`` (whichever backend
        holds them) and then read with ggml's byte strides, so views and permuted
        tensors come out right. The scheduler reuses buffers after the callback
        returns: the copy must happen here, inside it.
        """
        dtype = _NUMPY.get(int(tensor.type))
        if dtype is None:
            return None
        ne = list(tensor.ne)  # Python ints already
        nb = list(tensor.nb)
        if min(ne) <= 0:
            return np.zeros(tuple(reversed(ne)), dtype=np.float32)
        if nb[0] == dtype.itemsize and nb[1] == nb[0] * ne[0] and nb[2] == nb[1] * ne[1] and nb[3] == nb[2] * ne[2]:
            # contiguous (most nodes): one copy, no strides
            out = np.empty(tuple(reversed(ne)), dtype=dtype)
            self.lib.ggml_backend_tensor_get(ptr, out.ctypes.data, 0, out.nbytes)
            return out if dtype == np.float32 else out.astype(np.float32)
        span = sum((n - 1) * b for n, b in zip(ne, nb)) + dtype.itemsize
        if any(b % dtype.itemsize for b in nb):
            return None
        raw = np.empty(span, dtype=np.uint8)
        self.lib.ggml_backend_tensor_get(ptr, raw.ctypes.data, 0, span)
        view = np.lib.stride_tricks.as_strided(
            raw.view(dtype), shape=tuple(reversed(ne)), strides=tuple(reversed(nb)), writeable=False
        )
        return np.array(view, dtype=np.float32)

    def write(self, ptr: int, tensor: GgmlTensor, values: np.ndarray) -> None:
        """Overwrite a contiguous float32 tensor in place (for planted faults)."""
        if int(tensor.type) != F32:
            raise PvError("only float32 ggml tensors can be modified in place")
        ne = [int(x) for x in tensor.ne]
        nb = [int(x) for x in tensor.nb]
        contiguous = nb[0] == 4 and all(nb[i] == nb[i - 1] * ne[i - 1] for i in range(1, MAX_DIMS))
        if not contiguous:
            raise PvError(f"ggml tensor {tensor.name.decode()} is not contiguous: cannot modify it")
        data = np.ascontiguousarray(values, dtype="<f4")
        self.lib.ggml_backend_tensor_set(ptr, data.ctypes.data, 0, data.nbytes)


def tensor_at(ptr: int) -> GgmlTensor:
    return GgmlTensor.from_address(ptr)
