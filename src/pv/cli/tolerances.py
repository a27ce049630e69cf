"""``pv tolerances measure``: per-stage half-precision tolerances from the oracle's own noise."""

from __future__ import annotations

import click

from pv.errors import ExitCode


@click.group(name="tolerances")
def command() -> None:
    """Measure tolerances (see docs/compare.md)."""


@command.command(name="measure")
@click.option("--model", "models", multiple=True, default=("synthetic",), show_default=True,
              help="'synthetic', 'synthetic:FAMILY', a HF directory or a .gguf file; repeat to merge.")
@click.option("--tokens", default="3,17,42,101,7,250,64,9,33,120,77,5,8,200,15,90", show_default=True,
              help="Token ids the oracle runs on (the same for every model and dtype).")
@click.option("--dtype", "dtypes", multiple=True, default=("bfloat16", "float16"), show_default=True,
              type=click.Choice(["bfloat16", "float16"], case_sensitive=False))
@click.option("--margin", default=4.0, show_default=True, help="Tolerance = measured floor x margin.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--output", "-o", required=True, metavar="FILE",
              help="Tolerance file to write (JSON), for pv diff --tolerances FILE.")
def measure(models: tuple[str, ...], tokens: str, dtypes: tuple[str, ...], margin: float, device: str,
            output: str) -> int:
    """Run the oracle in float32 and in each dtype; write per-stage tolerances from the difference."""
    from pv.capture.runtime import prefer_passive_openmp

    prefer_passive_openmp()
    from pv.capture.model.load import load_model
    from pv.capture.tokens import parse_tokens
    from pv.compare import noise

    results = []
    for spec in models:
        model = load_model(spec)
        ids = parse_tokens(tokens, model.config.vocab_size)
        for dtype in dtypes:
            result = noise.measure(model, ids, dtype.lower(), margin=margin, device=device)
            results.append(result)
            worst = max(result["measured"]["floor"].items(), key=lambda kv: kv[1]["rel"])
            click.echo(f"{spec} {dtype}: {len(result['measured']['floor'])} stages, noisiest "
                       f"{worst[0]} (relative {worst[1]['rel']:.3g}, cosine {worst[1]['cosine']:.6f})")
    path = noise.write(noise.merge(results), output)
    click.echo(f"wrote {path}")
    return int(ExitCode.OK)
