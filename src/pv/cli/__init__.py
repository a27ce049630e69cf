"""The ``pv`` command line: parses arguments, calls the library, prints results.

Subcommands live one per module (``pv/cli/<name>.py``, attribute ``command``)
and are imported only when invoked, so ``pv validate`` never pays for torch.
Every expected failure is one stderr line and exit code 2 (``PvError``);
findings are exit code 1; ``PV_DEBUG=1`` shows tracebacks of internal errors.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

from pv.errors import ExitCode, PvError
from pv.version import __version__

#: name -> (module, one-line help). Adding a command is one row here plus its module.
COMMANDS: dict[str, tuple[str, str]] = {
    "validate": ("pv.cli.validate", "Check contracts against the schema and the semantic rules."),
    "trace": ("pv.cli.trace", "Run a model and save named intermediate stages as APRT files."),
    "diff": ("pv.cli.diff", "Compare two APRT files or capture directories stage by stage."),
    "bisect": ("pv.cli.bisect", "Name the first stage where two captures diverge."),
    "tolerances": ("pv.cli.tolerances", "Measure per-stage half-precision tolerances from the oracle's noise."),
    "import": ("pv.cli.import_", "Turn tensors another engine dumped into an APRT capture."),
    "falsify": ("pv.cli.falsify", "Run a contract's falsifiers, record evidence, promote statuses."),
    "discharge": ("pv.cli.discharge", "Close a falsifier past FUNCTIONAL on live evidence for every target."),
    "evidence": ("pv.cli.evidence", "Compact old evidence: pv evidence prune keeps what every status rests on."),
    "status": ("pv.cli.status", "Report falsifier statuses and the evidence behind them."),
    "gate": ("pv.cli.gate", "Fail when a status regressed or a claim weakened against a baseline (for CI)."),
    "acknowledge": ("pv.cli.acknowledge", "Accept a weaker claim on the record (who and why), for pv gate."),
    "scaffold": ("pv.cli.scaffold", "Write failing test skeletons for a contract's unbound falsifiers."),
    "graph": ("pv.cli.graph", "Draw the depends_on graph of contracts (dot or mermaid), cycles flagged."),
    "coverage": ("pv.cli.coverage", "List obligations without falsifiers, falsifiers without tests, and back."),
    "schema": ("pv.cli.schema", "Print the contract schema, or write it where contracts' modelines can name it."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module = importlib.import_module(entry[0])
        command: click.Command = module.command
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Help text comes from the table, so `pv --help` imports no subcommand.
        rows = [(name, help_) for name, (_, help_) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pv")
def cli() -> None:
    """pv: contract-driven falsification of ML inference engines."""


def _one_line(text: str) -> str:
    """A message as one stderr line, whatever a library put in it (line breaks become spaces)."""
    return text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ").strip()


def run(args: list[str] | None = None, prog_name: str = "pv") -> int:
    """Run the CLI and return its exit code instead of exiting (testable in-process)."""
    try:
        rv: Any = cli.main(args=args, prog_name=prog_name, standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.Abort:
        click.echo("pv: aborted", err=True)
        return int(ExitCode.USAGE)
    except click.ClickException as exc:
        # Usage errors: click's own one-line message, exit 2.
        exc.show()
        return int(ExitCode.USAGE)
    except PvError as exc:
        click.echo(f"pv: error: {_one_line(str(exc))}", err=True)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("pv: interrupted", err=True)
        return 130
    except BrokenPipeError:
        return int(ExitCode.OK)
    except Exception as exc:
        if os.environ.get("PV_DEBUG"):
            raise
        click.echo(f"pv: internal error: {type(exc).__name__}: {_one_line(str(exc))} (PV_DEBUG=1 for a traceback)",
                   err=True)
        return int(ExitCode.USAGE)
    return int(rv or 0)


def main() -> None:
    sys.exit(run())
