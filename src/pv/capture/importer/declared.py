"""What an import says about the run beyond the tensors: their dtype, the engine's compute
dtype, and the token ids it ran.

A comparison's tolerance class comes from each side's dtype, so an import must
not call every file float32: a float16 engine's dump records ``float16`` and is
judged as half precision. An engine that upcast its tensors before dumping them
(``.float()`` before ``np.save``) hides its precision from the file; the mapping's
``dtype:`` or ``pv import --dtype`` declares it, recorded as the manifest's
``run.dtype``, which the comparison reads beside each file's ``dtype_captured``.

Token ids make "both sides ran the same input" checkable: ``--tokens``, or the
dump tensor the mapping's ``tokens:`` names (``input_ids``, ``[S]`` or
``[1, S]``), checked by ``pv.capture.tokens`` as every runner's are.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from pv.capture.tokens import check_ids, first_difference, parse_tokens
from pv.errors import PvError

#: What ``--dtype`` and a mapping's ``dtype:`` may declare (pv trace's dtypes).
COMPUTE_DTYPES = ("float32", "float16", "bfloat16")
#: Float dtypes as dumped, least precise first: a stage joined from several tensors
#: (q|k|v parts, shards) carries the roundings of the least precise one.
_FLOATS = ("bfloat16", "float16", "float32", "float64")


def compute_dtype(flag: str | None, mapping_dtype: str | None) -> str | None:
    """``--dtype`` over the mapping's ``dtype:``; None when neither declares one."""
    value = flag if flag is not None else mapping_dtype
    if value is None:
        return None
    name = value.strip().lower()
    if name not in COMPUTE_DTYPES:
        raise PvError(f"--dtype {value!r}: valid dtypes are {', '.join(COMPUTE_DTYPES)}")
    return name


def captured(dumped: Iterable[str]) -> tuple[str, str | None]:
    """(``dtype_captured``, the dtype as dumped when it is not a float) for one stage.

    Floats keep their dtype, the least precise of the stage's tensors winning;
    integer tensors (expert indices) are exact in the float32 file and record
    ``float32``, with their dumped dtype beside it, so they never select the
    quantized tolerance class.
    """
    names = set(dumped)
    floats = [f for f in _FLOATS if f in names]
    if floats:
        return floats[0], None
    return "float32", ",".join(sorted(names)) or None


def tokens_from_dump(value: np.ndarray, name: str) -> list[int]:
    """The ids held by a dump tensor: integers, ``[S]`` or ``[1, S]``."""
    arr = np.asarray(value)
    if arr.ndim == 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 1 or arr.size == 0:
        raise PvError(f"tokens tensor '{name}' is {list(np.shape(value))}; token ids are [S] or [1, S]")
    if arr.dtype.kind not in "iu" and not (arr.dtype.kind == "f" and np.all(np.mod(arr, 1) == 0)):
        raise PvError(f"tokens tensor '{name}' holds {arr.dtype} values that are not whole numbers")
    return [int(x) for x in arr]


def token_ids(flag: str | None, from_dump: Sequence[int] | None, dump_name: str | None,
              vocab_size: int | None) -> list[int] | None:
    """``--tokens`` and the dump's ids, which must agree when both are given; each checked."""
    given = list(parse_tokens(flag, vocab_size)) if flag is not None else None
    dumped = check_ids(from_dump, vocab_size) if from_dump is not None else None
    if given is not None and dumped is not None and given != dumped:
        raise PvError(f"--tokens ({len(given)} ids) differs from the dump's '{dump_name}' "
                      f"({len(dumped)} ids): {first_difference(given, dumped)}")
    return given if given is not None else dumped


def check_positions(ids: Sequence[int], positions: dict[str, int]) -> None:
    """Every imported stage with a position axis has one row per token id."""
    for where, n in positions.items():
        if n != len(ids):
            raise PvError(f"the token ids are {len(ids)} but {where} has {n} positions: "
                          "give the ids this dump ran")
