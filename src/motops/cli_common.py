"""What every ``motops`` command group shares: the ``-p``/``-S`` options, params loading and error exits."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel

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


def _given(overrides: list[str] | None) -> list[tuple[str, str]]:
    """``(dotted key, the -S text)`` of each override, in order (values are parsed by ``load_params``)."""
    return [(item.partition("=")[0].strip(), item) for item in overrides or ()]


def refuse_unused(overrides: list[str] | None, reads: tuple[str, ...], command: str) -> None:
    """Refuse a ``-S`` override of a key ``command`` does not read, naming it (one line).

    Args:
        overrides: The ``-S`` texts, already accepted by ``load_params`` (known keys, valid values).
        reads: Keys and sections (``track``, ``export.engine_dir``) the command reads.
        command: How the command is typed (``motops track``), for the message.

    Raises:
        ConfigError: The first override outside ``reads``.
    """
    shown = ", ".join(r if "." in r else f"{r}.*" for r in reads)
    for key, item in _given(overrides):
        if not any(key == r or key.startswith(f"{r}.") or r.startswith(f"{key}.") for r in reads):
            raise ConfigError(f"-S {item}: {key} has no effect on `{command}`, which reads only {shown}; drop it")


def user_settings(section: str, values: BaseModel, overrides: list[str] | None) -> dict[str, Any]:
    """The keys of one params section the user set with ``-S`` (``-S track.tracker=...``), with their values.

    ``values`` is that section as loaded (overrides applied and validated); the whole section
    counts as given when ``-S`` replaced it (``-S 'track={...}'``).
    """
    out: dict[str, Any] = {}
    for key, _item in _given(overrides):
        head, _, name = key.partition(".")
        if head != section:
            continue
        names = [name.partition(".")[0]] if name else list(type(values).model_fields)
        out.update({n: getattr(values, n) for n in names})
    return out
