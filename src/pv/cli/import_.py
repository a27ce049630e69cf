"""``pv import``: tensors another engine dumped, as a capture ``pv diff``/``pv bisect`` can read."""

from __future__ import annotations

import json
from typing import Any

import click

from pv.capture.importer.declared import COMPUTE_DTYPES
from pv.capture.importer.mapping import shipped
from pv.errors import ExitCode, PvError


def _mapping_help() -> str:
    """The shipped mappings, listed from ``pv/mappings`` itself (the one registry)."""
    return f"A shipped mapping ({', '.join(shipped())}) or a mapping YAML file."


@click.command(name="import")
@click.argument("dumps", nargs=-1, metavar="DUMP...")
@click.option("--mapping", "mapping_spec", required=True, metavar="NAME|FILE", help=_mapping_help())
@click.option("--output", "-o", default=None, metavar="DIR",
              help="New or empty capture directory (required unless --check).")
@click.option("--model", default=None,
              help="Model whose sizes check the result and resolve named dims (optional).")
@click.option("--dtype", default=None, type=click.Choice(COMPUTE_DTYPES, case_sensitive=False),
              help="The engine's compute dtype, when its dump was upcast before saving "
              "(over the mapping's dtype:; recorded as run.dtype).")
@click.option("--tokens", default=None, metavar="IDS",
              help="The token ids the dump ran, e.g. 1,2,3 (recorded; checked against the mapping's "
              "tokens: tensor and the stages' positions).")
@click.option("--check", is_flag=True, help="Validate the mapping alone and stop: no dump, no --output.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"], case_sensitive=False),
              default="text", show_default=True)
def command(dumps: tuple[str, ...], mapping_spec: str, output: str | None, model: str | None,
            dtype: str | None, tokens: str | None, check: bool, fmt: str) -> int:
    """Turn DUMP files (.npy, .npz, .safetensors; directories of them) into an APRT capture.

    A single DUMP folder holding generate.json and one step-N folder of dumps per step
    becomes a generation capture, step by step (pv bisect --generate reads it).
    """
    from pv.capture.importer import mapping
    from pv.capture.importer.convert import import_dumps

    mp = mapping.load(mapping_spec)
    if check:
        unused = [what for what, given in (("DUMP", dumps), ("--output", output), ("--model", model),
                                            ("--dtype", dtype), ("--tokens", tokens)) if given]
        if unused:
            raise PvError(f"--check validates the mapping alone; drop {', '.join(unused)} "
                          "(or drop --check to import)")
        click.echo(f"mapping {mp.name}: {len(mp.rules)} rules, valid"
                   + (f"; tensor parallel over {mp.tensor_parallel.size} ranks"
                      if mp.tensor_parallel else ""))
        return int(ExitCode.OK)
    if not dumps:
        raise PvError("pv import needs at least one DUMP file or directory (--check validates a mapping alone)")
    if output is None:
        raise PvError("pv import needs --output DIR (--check validates a mapping alone)")
    config = None
    if model is not None:
        from pv.capture.model.load import model_config

        config = model_config(model)
    from pv.capture.importer.generation import is_generation

    if is_generation(dumps):  # generate.json and one step-N folder of dumps per step
        if tokens is not None:
            raise PvError("--tokens: a generation's generate.json records each step's tokens; drop --tokens")
        return _generation(dumps[0], mp, output, config, dtype, fmt)
    result = import_dumps(dumps, mp, output, config=config, dtype=dtype, tokens=tokens)
    if fmt.lower() == "json":
        click.echo(json.dumps({"output": str(result.output), "files": result.files,
                               "stages": result.stages, "ignored": result.ignored,
                               "ranks": result.ranks, "dtypes": result.dtypes,
                               "compute_dtype": result.compute, "token_ids": result.token_ids}, indent=1))
        return int(ExitCode.OK)
    click.echo(f"wrote {result.files} files and manifest.json to {result.output} "
               f"(mapping {mp.name}, {result.ranks} rank(s))")
    click.echo(f"stages: {', '.join(result.stages)}")
    click.echo(f"dtype as dumped: {', '.join(result.dtypes)}; compute dtype: "
               f"{result.compute or 'not declared (--dtype, or the mapping dtype:, if the dump was upcast)'}")
    click.echo("tokens: "
               + (f"{len(result.token_ids)}" if result.token_ids is not None
                  else "not recorded (--tokens or the mapping's tokens: make pv diff check the input)"))
    if result.ignored:
        shown = ", ".join(result.ignored[:6])
        more = f" (+{len(result.ignored) - 6} more)" if len(result.ignored) > 6 else ""
        click.echo(f"ignored {len(result.ignored)} unmapped name(s): {shown}{more}")
    return int(ExitCode.OK)


def _generation(root: str, mp: Any, output: str, config: Any, dtype: str | None, fmt: str) -> int:
    """Import a generation step by step; what ``pv bisect --generate`` then reads."""
    from pv.capture.importer.generation import import_generation

    done = import_generation(root, mp, output, config=config, dtype=dtype)
    if fmt.lower() == "json":
        click.echo(json.dumps({"output": str(done.output), "steps": done.steps, "files": done.files,
                               "stages": done.stages, "ignored": done.ignored}, indent=1))
        return int(ExitCode.OK)
    click.echo(f"wrote {done.steps} steps ({done.files} files) and generate.json to {done.output} "
               f"(mapping {mp.name})")
    click.echo(f"stages: {', '.join(done.stages)}")
    if done.ignored:
        more = f" (+{len(done.ignored) - 6} more)" if len(done.ignored) > 6 else ""
        click.echo(f"ignored {len(done.ignored)} unmapped name(s): {', '.join(done.ignored[:6])}{more}")
    return int(ExitCode.OK)
