"""The options several ``pv`` commands share, each defined once.

``--contracts``, ``--evidence``, ``--falsifiers`` and ``--tests`` name the same folders
with the same defaults in every command, and ``--format`` offers the same names for
the same renderings; a decorator here keeps their spelling, defaults and help from
drifting apart from one command to the next.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def paths_argument(required: bool = False) -> Callable[[F], F]:
    """``PATH...``: contract files, or folders searched for ``*.yaml``/``*.yml``."""
    return click.argument("paths", nargs=-1, required=required, type=click.Path(path_type=Path))


def contracts_option(help: str = "Folder (or file) of contracts [default: <repo>/contracts].") -> Callable[[F], F]:
    return click.option("--contracts", "contracts_dir", type=click.Path(path_type=Path), default=None, help=help)


def evidence_option(help: str = "Evidence folder [default: <repo>/evidence].") -> Callable[[F], F]:
    return click.option("--evidence", "evidence_dir", type=click.Path(path_type=Path), default=None, help=help)


def falsifiers_option(help: str = "Folder of falsifier tests [default: <repo>/falsifiers].") -> Callable[[F], F]:
    return click.option("--falsifiers", "falsifiers_dir", type=click.Path(path_type=Path), default=None, help=help)


def tests_option(*, multiple: bool = False,
                 help: str = "Folder of falsifier tests [default: <repo>/falsifiers].") -> Callable[[F], F]:
    """``--tests``: where marked falsifier tests live (several folders or files where ``multiple``)."""
    if multiple:
        return click.option("--tests", "tests_dirs", type=click.Path(path_type=Path, exists=True), multiple=True,
                            help=help)
    return click.option("--tests", "tests_dir", type=click.Path(path_type=Path), default=None, help=help)


#: The renderings a command may offer, by name.
TEXT, JSON, MARKDOWN, SARIF, GITHUB = "text", "json", "markdown", "sarif", "github"


def format_option(*choices: str, default: str = TEXT, help: str | None = None) -> Callable[[F], F]:
    """``--format``: one of ``choices`` (``text`` lines for people, ``json`` for scripts, ``sarif``
    and ``github`` for CI annotations, ``markdown`` for a pull request)."""
    return click.option("--format", "fmt", type=click.Choice(list(choices)), default=default, show_default=True,
                        help=help)


def contract_option(help: str = "Contract id (metadata.id or file stem), or the path of its file.",
                    required: bool = True, metavar: str = "ID|PATH") -> Callable[[F], F]:
    return click.option("--contract", "contract_id", required=required, default=None, metavar=metavar, help=help)


def by_reason_options(who: str, why: str) -> Callable[[F], F]:
    """``--by WHO --reason WHY``: a person's name and reason, both kept in what is written."""
    def wrap(fn: F) -> F:
        fn = click.option("--reason", required=True, metavar="WHY", help=why)(fn)
        return click.option("--by", required=True, metavar="WHO", help=who)(fn)
    return wrap


__all__ = ["GITHUB", "JSON", "MARKDOWN", "SARIF", "TEXT", "by_reason_options", "contract_option", "contracts_option",
           "evidence_option", "falsifiers_option", "format_option", "paths_argument", "tests_option"]
