"""Capture overhead and engine speed, measured side by side in one run.

    python benchmarks/bench_capture.py [--tokens 128] [--repeat 5] [--model PATH]

For the synthetic model and (when present) SmolLM2-135M, at 128 tokens on the
CPU in float32, prints the best wall time of

- the engine's plain forward (no tap),
- a full capture (all stages, all layers) to a fresh directory, files and
  manifest included, and their ratio (target: <= 2x);
- transformers' eager forward of the same weights, and the ratio engine /
  transformers (target: <= 1.0x).

Times are the best of ``--repeat`` interleaved runs after one warm-up run. Only ratios
measured in the same run mean anything; absolute times depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
SMOLLM2 = Path(os.environ.get("PV_SMOLLM2_GGUF", ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"))


def interleaved_best(fns: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Best (minimum) wall time of each function, run in alternation so that load
    from other processes hits every contender alike; the minimum is the run least
    disturbed by that load, which keeps ratios meaningful on a shared machine."""
    for fn in fns.values():
        fn()  # warm-up: allocator, thread pool, page cache
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: min(ts) for name, ts in times.items()}


def transformers_forward(model):  # type: ignore[no-untyped-def]
    """transformers' own model of the same weights, eager attention, float32 CPU."""
    import torch
    import transformers

    c = model.config
    kwargs = dict(vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
                  num_hidden_layers=c.num_hidden_layers, num_attention_heads=c.num_attention_heads,
                  num_key_value_heads=c.num_key_value_heads, head_dim=c.head_dim, rope_theta=c.rope_theta,
                  rms_norm_eps=c.rms_norm_eps, tie_word_embeddings=c.tie_word_embeddings,
                  max_position_embeddings=c.max_position_embeddings)
    if c.architecture == "qwen2":
        hf = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**kwargs))
    else:
        hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(attention_bias=c.attention_bias, **kwargs))
    hf.config._attn_implementation = "eager"
    hf.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict.items()}, strict=False)
    if c.tie_word_embeddings:
        hf.tie_weights()
    hf.eval()

    def run(ids: list[int]) -> object:
        with torch.inference_mode():
            return hf(torch.tensor([ids])).logits

    return run


def bench(spec: str, n_tokens: int, repeat: int, scratch: Path) -> None:
    from pv.capture.aprt import CaptureWriter
    from pv.capture.engine import Engine
    from pv.capture.models import load_model
    from pv.capture.plan import CapturePlan, Tap
    from pv.capture.trace import capture

    model = load_model(spec)
    engine = Engine(model)
    ids = [(7 * i + 3) % model.config.vocab_size for i in range(n_tokens)]
    counter = [0]

    plan = CapturePlan.parse("all", "all")

    def full_capture() -> object:
        """The engine's forward with every stage of every layer streamed to disk."""
        counter[0] += 1
        out = scratch / f"cap-{counter[0]}"
        writer = CaptureWriter(out, {"bench": True})
        tap = Tap(plan, writer)
        logits = engine.forward(ids, tap)
        tap.finish()
        writer.close()
        shutil.rmtree(out)
        return logits

    def end_to_end() -> object:
        """``capture()`` as pv trace runs it: plan checks, engine build, files, manifest."""
        counter[0] += 1
        out = scratch / f"cap-{counter[0]}"
        result = capture(model, tokens=ids, stages="all", layers="all", output=out)
        shutil.rmtree(out)
        return result

    hf_run = transformers_forward(model)
    t = interleaved_best({"plain": lambda: engine.forward(ids), "full": full_capture,
                             "e2e": end_to_end, "hf": lambda: hf_run(ids)}, repeat)
    plain, full, e2e, hf = t["plain"], t["full"], t["e2e"], t["hf"]
    probe = capture(model, tokens=ids, output=scratch / "size")
    mib = probe.bytes_written / (1 << 20)
    shutil.rmtree(scratch / "size")
    name = Path(spec).name
    print(f"{name}: {n_tokens} tokens, {model.config.num_hidden_layers} layers, float32 CPU, "
          f"best of {repeat}")
    print(f"  engine forward            {plain * 1e3:9.1f} ms")
    print(f"  full capture ({probe.files} files, {mib:.0f} MiB) {full * 1e3:9.1f} ms   "
          f"ratio {full / plain:.2f}x  (target <= 2x)")
    print(f"  capture() incl. engine build {e2e * 1e3:6.1f} ms   ratio {e2e / plain:.2f}x")
    print(f"  transformers eager        {hf * 1e3:9.1f} ms   "
          f"engine/transformers {plain / hf:.2f}x  (target <= 1.0x)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--model", action="append", help="model spec (repeatable); default synthetic + SmolLM2")
    parser.add_argument("--scratch", default=None, help="directory for the captures (default: a temp dir)")
    args = parser.parse_args()
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    specs = args.model or ["synthetic"] + ([str(SMOLLM2)] if SMOLLM2.is_file() else [])
    if not args.model and not SMOLLM2.is_file():
        print(f"(SmolLM2 not found at {SMOLLM2}; synthetic only)")
    with tempfile.TemporaryDirectory(dir=args.scratch) as tmp:
        for spec in specs:
            bench(spec, args.tokens, args.repeat, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
