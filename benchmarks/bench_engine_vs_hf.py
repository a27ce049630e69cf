"""pv's engine against transformers, forward only, on the same weights, measured side by side.

    python benchmarks/bench_engine_vs_hf.py [--model PATH ...] [--tokens 128] [--repeat 7]
                                            [--threads N] [--profile]

Contenders, all float32 on the CPU, one sequence of ``--tokens`` tokens, no tap:

- ``engine``: ``pv.capture.engine.runner.Engine.forward``;
- ``hf-eager``: transformers' class for the family (``LlamaForCausalLM``,
  ``Gemma3ForCausalLM``, ...) with
  ``attn_implementation="eager"`` (the reference the target is stated against);
- ``hf-sdpa``: the same model with transformers' default SDPA attention;
- ``oracle``: ``HFOracle.forward`` without a tap (pv's registered attention,
  which delegates to transformers' eager function).

The contenders run in alternation, round after round, so load from other
processes hits each alike; the script prints each median and the median of the
per-round ratios engine / hf-eager (target <= 1.0x). ``--profile`` adds
torch.profiler's top operators for one forward of the engine and of hf-eager,
which shows where a slower engine spends its time. Absolute times depend on the
machine; only the ratios of one run mean anything. On a machine shared with
other busy processes, ``--threads 1`` gives far steadier ratios: oversubscribed
intra-op thread pools make every contender's time swing by several times.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GEMMA3 = Path(__file__).resolve().parents[1] / "models" / "gemma-3-270m-q4_k_m.gguf"
SMOLLM2 = Path(os.environ.get("PV_SMOLLM2_GGUF", ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"))


def hf_model(loaded: Any, attn: str) -> Any:
    """transformers' model class for ``loaded``, its weights, a stock attention implementation."""
    from pv.capture.oracle.runner import HFOracle

    # The family's transformers class with the weights loaded as the oracle loads
    # them (MoE experts fused, ties checked), then a stock attention implementation.
    model = HFOracle(loaded).model
    model.config._attn_implementation = attn
    return model.eval()


def runner(model: Any) -> Callable[[list[int]], Any]:
    import torch

    def run(ids: list[int]) -> Any:
        with torch.inference_mode():
            return model(input_ids=torch.tensor([ids]), use_cache=False).logits
    return run


def measure(fns: dict[str, Callable[[], Any]], repeat: int) -> dict[str, list[float]]:
    for fn in fns.values():  # warm-up: allocator, thread pool, caches
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def profile(label: str, fn: Callable[[], Any], rows: int) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    print(f"\n-- {label}: top operators by self CPU time")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=None,
                        help="model spec, repeatable (default: SmolLM2 and Gemma 3 where present, else synthetic)")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--profile", action="store_true", help="print torch.profiler tables")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from pv.capture.engine.runner import Engine
    from pv.capture.model.load import load_model
    from pv.capture.oracle.runner import HFOracle

    specs = args.model or ([str(p) for p in (SMOLLM2, GEMMA3) if p.is_file()] or ["synthetic"])
    for spec in specs:
        compare_one(spec, args, torch, Engine, load_model, HFOracle)
    return 0


def compare_one(spec: str, args: Any, torch: Any, Engine: Any, load_model: Any, HFOracle: Any) -> None:
    """One model: the four contenders in alternation, medians and ratios."""
    loaded = load_model(spec)
    ids = [(7 * i + 3) % loaded.config.vocab_size for i in range(args.tokens)]
    engine = Engine(loaded)
    oracle = HFOracle(loaded)
    eager, sdpa = runner(hf_model(loaded, "eager")), runner(hf_model(loaded, "sdpa"))
    fns: dict[str, Callable[[], Any]] = {
        "engine": lambda: engine.forward(ids),
        "hf-eager": lambda: eager(ids),
        "hf-sdpa": lambda: sdpa(ids),
        "oracle": lambda: oracle.forward(ids),
    }
    times = measure(fns, args.repeat)
    ratios = [e / h for e, h in zip(times["engine"], times["hf-eager"])]
    print(f"{Path(spec).name}: {args.tokens} tokens, {loaded.config.num_hidden_layers} layers, "
          f"float32 CPU, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"median of {args.repeat} interleaved rounds")
    for name, ts in times.items():
        print(f"  {name:9s} {statistics.median(ts) * 1e3:9.1f} ms")
    ratio = statistics.median(ratios)
    verdict = "meets" if ratio <= 1.0 else "misses"
    print(f"  engine / hf-eager: {ratio:.2f}x (per-round ratios {min(ratios):.2f}..{max(ratios):.2f}; "
          f"target <= 1.0x: {verdict})")
    print(f"  engine / hf-sdpa:  "
          f"{statistics.median(e / s for e, s in zip(times['engine'], times['hf-sdpa'])):.2f}x")
    if args.profile:
        profile("engine", fns["engine"], 12)
        profile("hf-eager", fns["hf-eager"], 12)


if __name__ == "__main__":
    sys.exit(main())
