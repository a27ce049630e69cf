"""``pv import``: tensors another engine dumped, as a capture ``pv diff``/``pv bisect`` can read."""

from __future__ import annotations

import json

import click

from pv.errors import ExitCode


@click.command(name="import")
@click.argument("dumps", nargs=-1, required=True, metavar="DUMP...")
@click.option("--mapping", "mapping_spec", required=True, metavar="NAME|FILE",
              help="A shipped mapping (transformer_lens, llama.cpp) or a mapping YAML file.")
@click.option("--output", "-o", required=True, metavar="DIR", help="New or empty capture directory.")
@click.option("--model", default=None,
              help="Model whose sizes check the result and resolve named dims (optional).")
@click.option("--check", is_flag=True, help="Validate the mapping and stop; read no dump.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"], case_sensitive=False),
              default="text", show_default=True)
def command(dumps: tuple[str, ...], mapping_spec: str, output: str, model: str | None, check: bool,
            fmt: str) -> int:
    """Turn DUMP files (.npy, .npz, .safetensors; directories of them) into an APRT capture."""
    from pv.capture.importer import mapping
    from pv.capture.importer.convert import import_dumps

    mp = mapping.load(mapping_spec)
    if check:
        click.echo(f"mapping {mp.name}: {len(mp.rules)} rules, valid"
                   + (f"; tensor parallel over {mp.tensor_parallel.size} ranks"
                      if mp.tensor_parallel else ""))
        return int(ExitCode.OK)
    config = None
    if model is not None:
        from pv.capture.model.load import model_config

        config = model_config(model)
    result = import_dumps(dumps, mp, output, config=config)
    if fmt.lower() == "json":
        click.echo(json.dumps({"output": str(result.output), "files": result.files,
                               "stages": result.stages, "ignored": result.ignored,
                               "ranks": result.ranks}, indent=1))
        return int(ExitCode.OK)
    click.echo(f"wrote {result.files} files and manifest.json to {result.output} "
               f"(mapping {mp.name}, {result.ranks} rank(s))")
    click.echo(f"stages: {', '.join(result.stages)}")
    if result.ignored:
        shown = ", ".join(result.ignored[:6])
        more = f" (+{len(result.ignored) - 6} more)" if len(result.ignored) > 6 else ""
        click.echo(f"ignored {len(result.ignored)} unmapped name(s): {shown}{more}")
    return int(ExitCode.OK)
