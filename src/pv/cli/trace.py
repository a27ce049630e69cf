"""``pv trace``: run a model once and save the requested stages as APRT files."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from pv.capture import runners
from pv.errors import ExitCode, PvError

if TYPE_CHECKING:
    from pv.capture.generate import GenerateResult
    from pv.capture.model.loaded import LoadedModel
    from pv.capture.trace import TracePlan


@click.command(name="trace")
@click.option("--model", "model", default="synthetic", show_default=True,
              help="'synthetic', a Hugging Face model directory, or a .gguf file.")
@click.option("--engine", default="pv", show_default=True,
              type=click.Choice(runners.names(), case_sensitive=False),
              help="pv: this project's engine; hf: the transformers reference; llama.cpp: a GGUF "
                   "run by llama.cpp (the [llamacpp] extra).")
@click.option("--prompt", default=None, help="Text to tokenise with the model's tokenizer.")
@click.option("--tokens", default=None, help="Token ids, e.g. 1,2,3 (instead of --prompt).")
@click.option("--save-tensor", "stages", required=True, metavar="STAGES",
              help="Comma-separated stage names, or 'all'.")
@click.option("--layers", default="all", show_default=True, help="0 | 0,3,5 | 2..6 (end exclusive) | all.")
@click.option("--output", "-o", required=True, metavar="DIR",
              help="Capture directory (created; must be empty unless --force).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--dtype", default="float32", show_default=True,
              type=click.Choice(["float32", "float16", "bfloat16"], case_sensitive=False))
@click.option("--inject-fault", "fault", default=None, metavar="NAME[@LAYER]",
              help="Inject a catalogued bug into the pv engine, or with --engine llama.cpp into "
                   "llama.cpp's graph (docs/capture.md, docs/engines.md).")
@click.option("--device-map", "device_map", default=None, metavar="auto|JSON",
              help="--engine hf: spread or offload the oracle with accelerate, e.g. "
                   "'{\"model.layers.3\": \"disk\", ...}' (module -> cpu|disk|cuda:N).")
@click.option("--offload-dir", default=None, metavar="DIR",
              help="Where modules mapped to 'disk' keep their weights.")
@click.option("--generate", "generate", default=0, type=click.IntRange(min=0), metavar="N",
              help="Generate N tokens greedily with the engine's KV cache and capture every step "
                   "(step-0 the prefill, then one decode step per token).")
@click.option("--positions", default=None, metavar="A..B",
              help="Keep only query rows A to B-1 of attn_scores and attn_softmax (a partial capture; "
                   "docs/compare.md).")
@click.option("--heads", default=None, metavar="HEADS",
              help="Keep only these heads of attn_scores and attn_softmax: 0 | 0,3 | 2..6 (end exclusive).")
@click.option("--force", is_flag=True, help="Replace the capture in a non-empty output directory.")
@click.option("--dry-run", is_flag=True, help="Check and print the plan; load no weights, run nothing.")
def command(model: str, engine: str, prompt: str | None, tokens: str | None, stages: str, layers: str,
            output: str, device: str, dtype: str, fault: str | None, device_map: str | None,
            offload_dir: str | None, generate: int, positions: str | None, heads: str | None, force: bool,
            dry_run: bool) -> int:
    """Run MODEL on a prompt and save named intermediate stages (APRT files + manifest.json)."""
    from pv.capture.runtime import prefer_passive_openmp

    prefer_passive_openmp()
    from pv.capture.model.load import load_model, model_config
    from pv.capture.trace import check_output, make_plan, run_plan

    check_output(Path(output), force)  # cheap, and before a GGUF file is dequantised
    config = model_config(model)
    plan = make_plan(model, config, tokens=tokens, prompt=prompt, stages=stages, layers=layers,
                     output=output, engine=engine, device=device, dtype=dtype, fault=fault,
                     overwrite=force, device_map=_device_map(device_map), offload_dir=offload_dir,
                     positions=positions, heads=heads)
    if generate and plan.capture.slice is not None:
        raise PvError("--positions and --heads cut a prefill's attention matrices: not with --generate")
    from pv.capture.faults import is_decode_fault

    if is_decode_fault(plan.fault) and generate < 2:
        raise PvError(f"fault {plan.fault} only acts at decode steps: give --generate 2 or more")
    if dry_run:
        click.echo("pv trace plan (dry run, nothing executed):")
        for line in plan.describe():
            click.echo("  " + line)
        if plan.tokens is None and plan.prompt is not None:  # the ids a run would feed, checked as it would
            from pv.capture.tokens import check_context, check_ids, prompt_ids

            ids = check_ids(prompt_ids(model, plan.prompt), config.vocab_size)
            check_context(len(ids) + generate, config, "the prompt" + (" and --generate" if generate else ""))
            click.echo(f"  tokens:  {','.join(map(str, ids))} ({len(ids)})")
        return int(ExitCode.OK)

    loaded = load_model(model)
    total = len(plan.expected)
    show = sys.stderr.isatty()
    count = [0]

    def progress(stage: str, layer: int | None) -> None:
        count[0] += 1
        if show:
            where = stage if layer is None else f"layer {layer} {stage}"
            click.echo(f"\r  captured {count[0]}/{total}  {where:<40}", err=True, nl=False)

    if generate:
        gen = _generate(plan, loaded, generate, progress)
        if show:
            click.echo("", err=True)
        click.echo(f"wrote {gen.steps} steps ({gen.files} files) and generate.json to {gen.output}")
        click.echo(f"prompt: {len(gen.prompt)} tokens  engine: {plan.engine}  generated: "
                   + ",".join(map(str, gen.tokens)))
        if loaded.tokenizer is not None:
            click.echo(f"text: {loaded.tokenizer.decode(gen.tokens)!r}")
        return int(ExitCode.OK)
    result = run_plan(plan, loaded, on_write=progress)
    if show:
        click.echo("", err=True)
    mib = result.bytes_written / (1 << 20)
    click.echo(f"wrote {result.files} files ({mib:.1f} MiB) and manifest.json to {result.output}")
    click.echo(f"tokens: {len(result.token_ids)}  engine: {plan.engine}  device: {plan.device}  "
               f"dtype: {plan.dtype}" + (f"  fault: {plan.fault}" if plan.fault else ""))
    for stage, reason in result.not_applicable.items():
        click.echo(f"not applicable: {stage} ({reason})")
    return int(ExitCode.OK)


def _generate(plan: TracePlan, loaded: LoadedModel, n_new: int,
              progress: Callable[[str, int | None], None]) -> GenerateResult:
    """``--generate N``; with ``--force`` over a non-empty directory, replace what is there.

    The new generation is written into a hidden folder inside the output
    directory and moved into place only once every step is complete, so a run
    that fails leaves the earlier capture exactly as it was (``_swap_in``).
    """
    import dataclasses
    import shutil
    import tempfile

    from pv.capture.generate import capture_generation

    root = plan.destination
    if not (plan.overwrite and root.is_dir() and any(root.iterdir())):
        return capture_generation(plan, loaded, n_new, on_write=progress)
    try:
        staging = Path(tempfile.mkdtemp(prefix=".pv-generate-", dir=root))
    except OSError as exc:
        raise PvError(f"{root}: cannot write the new generation there: "
                      f"{exc.strerror or type(exc).__name__}") from None
    try:
        gen = capture_generation(dataclasses.replace(plan, output=staging), loaded, n_new,
                                 on_write=progress)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _swap_in(root, staging)
    return dataclasses.replace(gen, output=root)


def _swap_in(root: Path, staging: Path) -> None:
    """Replace the capture in ``root`` with the finished generation in ``staging``.

    The earlier capture goes first (``clear_capture``: a generation's
    ``generate.json`` and every ``step-N``, including steps past the new count,
    or a single capture's manifest and stage files); then the new steps move
    in, ``generate.json`` last. Nothing else in ``root`` is touched.
    """
    from pv.capture.store.steps import GENERATE_FILE
    from pv.capture.trace import clear_capture

    try:
        clear_capture(root)
        for child in sorted(staging.iterdir(), key=lambda p: p.name == GENERATE_FILE):
            child.rename(root / child.name)
        staging.rmdir()
    except OSError as exc:
        raise PvError(f"{root}: cannot put the new generation in place "
                      f"({exc.strerror or type(exc).__name__}); it is left in {staging}") from None


def _device_map(text: str | None) -> object:
    """``auto`` or a JSON object of module name -> device; anything else is a usage error.

    Read as pv reads JSON files (``pv.bounded``): a module named twice is refused,
    not silently given the last device.
    """
    from pv import bounded

    if text is None or text.strip() == "auto":
        return None if text is None else "auto"
    try:
        value = bounded.parse_json(text, "--device-map", max_depth=4)
    except bounded.DataFileError as exc:
        message = str(exc)
        if "invalid JSON: " in message:
            detail = message.split("invalid JSON: ", 1)[1]
            raise PvError(f"--device-map: not 'auto' and not a JSON object ({detail})") from None
        raise PvError(message) from None  # a module named twice, or nested absurdly deep
    if not isinstance(value, dict) or not value:
        raise PvError("--device-map: expected 'auto' or a non-empty JSON object")
    return value
