"""What every ``motops`` command group shares: the ``-p``/``-S`` options, params loading and error exits."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from motops.config import Params, load_params
from motops.errors import ConfigError

ParamsOption = Annotated[Path, typer.Option("--params", "-p", help="The params file.")]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", "-S", help="Override a param, e.g. -S data.synthetic.frames=60 (repeatable)."),
]


def fail(exc: Exception, code: int) -> typer.Exit:
    """Print ``error: ...`` in red on stderr and return the ``typer.Exit`` to raise."""
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def params_from(path: Path, overrides: list[str] | None) -> Params:
    """The params from ``path`` with overrides; the built-in defaults when ``params.yaml`` is absent."""
    if not path.exists() and path == Path("params.yaml"):
        if overrides:
            raise ConfigError(f"{path}: not found, so -S overrides have nothing to apply to")
        return Params()
    return load_params(path, overrides or ())
