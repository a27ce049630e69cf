"""Facts measured from what a falsifier test ran, never taken from what it says.

``live_requirements`` name only facts measured here (``pv.contract.requirements``:
``device``, ``dtype``, ``weights``, ``model_sha256``, ``model_fingerprint``,
``architecture``; ``pv validate`` refuses any other key) and are matched only
against facts read here from objects the test hands over:

- a torch tensor: its ``device`` and ``dtype`` attributes;
- a numpy array: device ``cpu``, its dtype;
- a capture (a ``pv.capture.trace.TraceResult`` or a capture folder): the device and
  dtype that the capture tap read off every tensor it wrote (``device_captured``,
  ``dtype_captured`` in the manifest);
- a loaded model (``pv.capture.models.LoadedModel``): the sha256 of its weight files,
  hashed here, and whether its weights are real (the rule below).

**Real weights.** A model's weights are ``real`` when they were loaded from files
(which are hashed into ``model_sha256``) and are not the output of pv's synthetic
generator: the first row of the embedding is compared with what the generator draws
first at its seed. Anything else is ``synthetic``. A contract that must name one
model exactly pins ``model_sha256``.

When a test observes several values of one fact (two captures on two devices), the
fact is the sorted list of them and a requirement must hold for every value.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pv.contract.requirements import MEASURED_KEYS
from pv.files import read_regular, sha256_file

_MANIFEST_LIMIT = 64 << 20


def merge(facts: dict[str, Any], key: str, value: Any) -> None:
    """Add one observed ``value`` of ``key``; several distinct values become a sorted list."""
    if value is None:
        return
    old = facts.get(key)
    values = set(old if isinstance(old, list) else [] if old is None else [old])
    values.update(value if isinstance(value, list) else [value])
    ordered = sorted(values, key=str)
    facts[key] = ordered[0] if len(ordered) == 1 else ordered


def _torch_dtype(dtype: Any) -> str:
    return str(dtype).replace("torch.", "")


def observe(obj: Any) -> dict[str, Any]:
    """The facts measurable from ``obj`` (see the module docstring); TypeError if none are."""
    cls = type(obj)
    module = getattr(cls, "__module__", "") or ""
    if module.startswith("torch") and hasattr(obj, "device") and hasattr(obj, "dtype"):
        device = obj.device
        text = device.type if getattr(device, "index", None) is None else f"{device.type}:{device.index}"
        return {"device": text, "dtype": _torch_dtype(obj.dtype)}
    if module.startswith("numpy") and hasattr(obj, "dtype"):
        return {"device": "cpu", "dtype": str(obj.dtype)}
    if hasattr(obj, "state_dict") and hasattr(obj, "fingerprint") and hasattr(obj, "source"):
        return model_facts(obj)
    output = getattr(obj, "output", None)
    if isinstance(output, Path) and getattr(obj, "manifest", None) is not None:
        return capture_facts(output)
    if isinstance(obj, (str, os.PathLike)) and Path(obj).is_dir():
        return capture_facts(Path(obj))
    raise TypeError(f"cannot measure facts from a {cls.__name__}: hand over a tensor, an array, "
                    "a capture (TraceResult or folder) or a loaded model")


def capture_facts(folder: Path) -> dict[str, Any]:
    """Device and dtype of every tensor a capture wrote, from its manifest; plus its model."""
    try:
        manifest = json.loads(read_regular(folder / "manifest.json", _MANIFEST_LIMIT))
    except (OSError, ValueError) as exc:
        raise TypeError(f"{folder}: not a readable capture ({exc})") from None
    facts: dict[str, Any] = {}
    files = manifest.get("files") if isinstance(manifest, dict) else None
    for entry in files if isinstance(files, list) else []:
        if isinstance(entry, dict):
            merge(facts, "device", entry.get("device_captured"))
            merge(facts, "dtype", entry.get("dtype_captured"))
    if "device" not in facts:
        raise TypeError(f"{folder}: the manifest records no measured device (made by an older pv?)")
    run = manifest.get("run") if isinstance(manifest, dict) else None
    model = run.get("model") if isinstance(run, dict) else None
    if isinstance(model, dict) and isinstance(model.get("fingerprint"), str):
        merge(facts, "model_fingerprint", model["fingerprint"])
    return facts


def _weight_files(source: str) -> list[Path]:
    path = Path(source)
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.iterdir()
                      if p.is_file() and p.suffix in (".safetensors", ".json", ".gguf", ".bin"))
    return []


@functools.lru_cache(maxsize=16)
def _hash_cached(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(path)


def weights_sha256(source: str) -> str | None:
    """sha256 of a model's weight files (one file: its own hash; a folder: hash of the names and
    hashes of its weight and config files); None when the model came from no file."""
    files = _weight_files(source)
    if not files:
        return None
    digests = []
    for f in files:
        st = f.stat()
        digests.append((f.name, _hash_cached(str(f.resolve()), st.st_size, st.st_mtime_ns)))
    if len(digests) == 1:
        return digests[0][1]
    return hashlib.sha256(json.dumps(digests).encode("utf-8")).hexdigest()


def is_synthetic(loaded: Any) -> bool:
    """Whether ``loaded``'s weights are what pv's seeded generator draws for its config."""
    import numpy as np

    from pv.capture.model.synthetic import SEED

    embed = loaded.state_dict.get("model.embed_tokens.weight")
    if embed is None or getattr(embed, "ndim", 0) != 2:
        return False
    rng = np.random.Generator(np.random.PCG64(SEED))
    first = rng.standard_normal(embed.shape[1]).astype(np.float32)
    return bool(np.array_equal(np.asarray(embed[0], dtype=np.float32), first))


def model_facts(loaded: Any) -> dict[str, Any]:
    digest = weights_sha256(str(loaded.source))
    real = digest is not None and not is_synthetic(loaded)
    facts: dict[str, Any] = {"weights": "real" if real else "synthetic",
                             "model_fingerprint": str(loaded.fingerprint)}
    if digest is not None:
        facts["model_sha256"] = digest
    arch = getattr(getattr(loaded, "config", None), "architecture", None)
    if arch is not None:
        facts["architecture"] = str(arch)
    return facts


def environment() -> dict[str, Any]:
    """The machine and numeric settings a test ran under, measured in the test's process.

    torch is read only if the test (or its fixtures) imported it: a registry test
    does not pay for torch, and its record says ``torch: not imported``.
    """
    env: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(),
                           "machine": platform.machine()}
    torch = sys.modules.get("torch")
    if torch is None:
        env["torch"] = "not imported"
        return env
    env["torch"] = str(getattr(torch, "__version__", "?"))
    env["torch_cuda"] = getattr(getattr(torch, "version", None), "cuda", None)
    try:
        env["threads"] = int(torch.get_num_threads())
        env["deterministic_algorithms"] = bool(torch.are_deterministic_algorithms_enabled())
        env["float32_matmul_precision"] = str(torch.get_float32_matmul_precision())
        env["tf32_matmul"] = bool(torch.backends.cuda.matmul.allow_tf32)
        env["tf32_cudnn"] = bool(torch.backends.cudnn.allow_tf32)
        available = bool(torch.cuda.is_available())
    except Exception as exc:  # noqa: BLE001 - a broken CUDA install is a fact to record, not a crash
        env["cuda_error"] = f"{type(exc).__name__}: {exc}"[:200]
        available = False
    env["cuda_available"] = available
    env["cuda_devices"] = int(torch.cuda.device_count()) if available else 0
    if available:
        env["gpus"] = [str(torch.cuda.get_device_name(i)) for i in range(env["cuda_devices"])]
        env["capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
        env["driver"] = _driver_version()
    return env


def _driver_version() -> str | None:
    import subprocess

    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = done.stdout.strip().splitlines()
    return lines[0].strip() if done.returncode == 0 and lines else None


def jsonable(value: Any, name: str) -> Any:
    """``value`` as plain JSON (numpy scalars and arrays converted); TypeError otherwise."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, tuple):
        value = list(value)
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        raise TypeError(f"fact {name!r} must be JSON-serialisable (got {type(value).__name__})") from None
    return value


def _values(fact: Any) -> list[Any]:
    return list(fact) if isinstance(fact, list) else [fact]


def _matches(actual: Any, wanted: Any) -> bool:
    if isinstance(wanted, (list, tuple)):
        return any(_matches(actual, w) for w in wanted)
    if isinstance(wanted, bool) or isinstance(actual, bool):
        return isinstance(actual, bool) and isinstance(wanted, bool) and actual == wanted
    if isinstance(wanted, str) and isinstance(actual, str):
        a, w = actual.strip().lower(), wanted.strip().lower()
        # "cuda" is met by "cuda:0": a device family names every index in it.
        return a == w or a.startswith(w + ":")
    return bool(actual == wanted)


def unmet(measured: Mapping[str, Any], requirements: Mapping[str, Any],
          environment: Mapping[str, Any] | None = None) -> list[str]:
    """Requirements that ``measured`` facts do not meet, each as ``key=wanted (measured: ...)``.

    A device fact on CUDA counts only when the same test's environment shows a
    CUDA device: a record cannot claim a GPU on a machine that had none.
    """
    misses = []
    for key, wanted in requirements.items():
        if key not in MEASURED_KEYS:
            misses.append(f"{key}={wanted} (not a measurable fact)")
            continue
        if key not in measured:
            misses.append(f"{key}={wanted} (not measured)")
            continue
        actual = measured[key]
        if not all(_matches(v, wanted) for v in _values(actual)):
            misses.append(f"{key}={wanted} (measured: {actual})")
            continue
        if key == "device" and any(str(v).startswith("cuda") for v in _values(actual)):
            env = environment or {}
            if not env.get("cuda_available") or not env.get("cuda_devices"):
                misses.append(f"{key}={wanted} (measured {actual}, but the environment shows no CUDA device)")
    return misses


def meets(measured: Mapping[str, Any], requirements: Mapping[str, Any] | None,
          environment: Mapping[str, Any] | None = None) -> bool:
    return not requirements or not unmet(measured, requirements, environment)

