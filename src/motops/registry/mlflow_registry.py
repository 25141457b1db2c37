"""MLflow logging, registration, aliases and promotion of engine bundles.

The one module of motops that talks to MLflow. An evaluated bundle goes through:

1. :func:`register`: one MLflow run in ``registry.experiment`` with the params, the metrics
   (combined and ``seq.<name>.<metric>``), the plots, ``gate.json``, the lineage tags and
   ``motops.bundle_digest``. Only when the gate passed: the bundle is logged as a pyfunc model
   named ``engine`` (:class:`EngineModel`, the bundle under ``artifacts/``), registered as a
   new version of ``registry.model_name`` (description: the gate table; tags: digest, gate,
   metrics, lineage) and given the alias ``challenger``. Registering a bundle whose digest
   is already registered does nothing.
2. :func:`promote`: the ``challenger`` becomes ``champion`` when it passes the gates against
   the current champion (or when forced, with a reason); the old champion becomes ``previous``.
3. :func:`rollback`: ``previous`` becomes ``champion`` again.

Aliases, not stages, say what a version is for: ``challenger`` (registered, waiting),
``champion`` (what ``publish`` ships), ``previous`` (the champion before, for a rollback).
A version's tags are strings; its metrics are under ``motops.metrics`` (canonical JSON) and,
for reading at a glance, ``motops.metric.<key>``.

Where MLflow is: ``MLFLOW_TRACKING_URI`` when set, else ``registry.tracking_uri`` with a
relative SQLite path taken from the project root (:func:`tracking_uri`); the same URI serves
as the registry. New experiments of a local SQLite store keep their artifacts next to the
database (``mlartifacts/``) unless ``registry.artifact_location`` says otherwise; a tracking
server chooses its own.

Credentials: a server started with MLflow's basic-auth app (``infra/``) is reached with
MLflow's own ``MLFLOW_TRACKING_USERNAME`` and ``MLFLOW_TRACKING_PASSWORD`` (or
``MLFLOW_TRACKING_TOKEN``), which MLflow's client reads from the environment on every request;
nothing here copies, drops or logs them. A refusal (401: wrong or missing credentials; 403: the
user lacks the permission) raises :class:`RegistryAuthError` in one line naming the server, the
user and the variables to set, never the password. URIs are shown with any ``user:password@``
removed (:func:`redact_uri`).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import inspect
import json
import logging
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit, urlunsplit

import mlflow
import mlflow.artifacts
import mlflow.pyfunc
from mlflow.exceptions import MlflowException

from motops.config import GatesParams, Params, RegistryParams
from motops.errors import ConfigError, MotopsError
from motops.registry.gates import evaluate_gate, format_gate_table
from motops.runtime.bundle import MANIFEST_FILE, load_bundle, manifest_digest, verify_bundle

logger = logging.getLogger(__name__)

CHALLENGER: Final = "challenger"
CHAMPION: Final = "champion"
PREVIOUS: Final = "previous"
#: Name of the logged pyfunc model holding the bundle, and its artifact key.
ENGINE_ARTIFACT: Final = "engine"
BUNDLE_ARTIFACT: Final = "bundle"
TAG_DIGEST: Final = "motops.bundle_digest"
TAG_GATE: Final = "motops.gate"
TAG_BACKEND: Final = "motops.backend"
TAG_METRICS: Final = "motops.metrics"
TAG_METRIC_PREFIX: Final = "motops.metric."
TAG_VERSION: Final = "motops.registered_version"
TAG_FORCED_REASON: Final = "motops.forced_reason"
TAG_PROMOTED_AT: Final = "motops.promoted_at"
TAG_PROMOTION: Final = "motops.promotion"
TAG_ROLLED_BACK: Final = "motops.rolled_back"
#: The gate's same-run timing of the challenger beside the champion (JSON, with ``champion_digest``).
TAG_SAME_RUN_FPS: Final = "motops.same_run_fps"
#: Track columns :meth:`EngineModel.predict` returns (MOTChallenge: 1-based frame, top-left box in pixels).
TRACK_COLUMNS: Final = ("frame", "id", "x", "y", "w", "h", "conf")
#: Distributions pinned in the logged model's requirements (those installed).
_REQUIREMENTS: Final = (
    "motops", "mlflow", "numpy", "pandas", "onnxruntime", "onnxruntime-gpu", "opencv-python",
    "opencv-python-headless", "pyyaml",
)
#: The logged model's code (MLflow "models from code"): loading it needs motops installed.
_MODEL_CODE: Final = (
    '"""The motops engine bundle as an MLflow pyfunc model (see motops.registry.mlflow_registry)."""\n\n'
    "from mlflow.models import set_model\n\n"
    "from motops.registry.mlflow_registry import EngineModel\n\n"
    "set_model(EngineModel())\n"
)
_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))/?$")
_KEY_UNSAFE = re.compile(r"[^\w./\- ]")
_MAX_KEY: Final = 250
_MAX_PARAM_VALUE: Final = 6000
_MAX_RUN_TAG_VALUE: Final = 8000
_PARAMS_PER_BATCH: Final = 100
_METRICS_PER_BATCH: Final = 1000


class RegistryError(MotopsError):
    """The registry is not in the state an operation needs (no challenger, no previous, a bad download...)."""


class RegistryAuthError(RegistryError):
    """The MLflow server refused the request: no or wrong credentials (401), or no permission (403).

    Attributes:
        status: The HTTP status, 401 or 403.
    """

    def __init__(self, message: str, status: int) -> None:
        self.status = status
        super().__init__(message)


class PromotionRefused(RegistryError):
    """The challenger failed the gates against the champion; nothing was moved.

    Attributes:
        gate: The gate (:func:`~motops.registry.gates.evaluate_gate`) that refused it.
    """

    def __init__(self, message: str, gate: dict[str, Any]) -> None:
        self.gate = gate
        super().__init__(message)


# --------------------------------------------------------------------------- where MLflow is


def tracking_uri(params: RegistryParams | Params, root: str | Path | None = None) -> str:
    """The MLflow tracking (and registry) URI to use.

    Args:
        params: The ``registry`` section (or the whole params).
        root: The project root a relative SQLite path or folder is taken from (default: the
            current directory).

    Returns:
        ``MLFLOW_TRACKING_URI`` when set and not empty; else ``params.tracking_uri`` with a
        relative ``sqlite:///PATH`` made absolute (``sqlite:////ROOT/PATH``) and a relative
        folder turned into a ``file://`` URI; other URIs (``http://``, ``postgresql://``...)
        as they are.

    Raises:
        ConfigError: ``registry.tracking_uri`` is empty.
    """
    env = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if env:
        return env
    uri = _registry_params(params).tracking_uri.strip()
    if not uri:
        raise ConfigError("registry.tracking_uri is empty; expected e.g. sqlite:///mlflow.db or http://HOST:5000")
    base = Path(root if root is not None else Path.cwd()).resolve()
    if uri.startswith("sqlite:///"):
        path, sep, query = uri[len("sqlite:///"):].partition("?")
        if path and not path.startswith("/") and path != ":memory:":
            return f"sqlite:///{(base / path).as_posix()}{sep}{query}"
        return uri
    if "://" not in uri and not uri.startswith("file:"):
        path = Path(uri)
        return (path if path.is_absolute() else base / path).resolve().as_uri()
    return uri


def _sqlite_file(uri: str) -> Path | None:
    if not uri.startswith("sqlite:////"):
        return None
    return Path(uri[len("sqlite:///"):].partition("?")[0])


def artifact_location(params: RegistryParams, uri: str, root: str | Path | None = None) -> str | None:
    """Where a new experiment keeps its artifacts.

    Returns:
        ``registry.artifact_location`` (a relative folder taken from ``root``); else, for a
        local SQLite store, ``mlartifacts/`` next to the database file (MLflow's own default
        is ``./mlruns`` in whatever the current directory is); else ``None``: the tracking
        server decides.
    """
    base = Path(root if root is not None else Path.cwd()).resolve()
    configured = getattr(params, "artifact_location", None)
    if configured:
        if "://" in configured or configured.startswith("file:"):
            return configured
        path = Path(configured)
        return (path if path.is_absolute() else base / path).resolve().as_uri()
    db = _sqlite_file(uri)
    return (db.parent / "mlartifacts").as_uri() if db is not None else None


def _registry_params(params: Any) -> RegistryParams:
    """The ``registry`` section from itself or from the whole :class:`~motops.config.Params`."""
    if isinstance(params, RegistryParams):
        return params
    section = getattr(params, "registry", None)
    if isinstance(section, RegistryParams):
        return section
    raise ConfigError(f"params: expected RegistryParams (params.registry) or Params, got {type(params).__name__}")


def redact_uri(uri: str) -> str:
    """``uri`` with the password of any ``user:password@`` part replaced by ``***``, for messages and output."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return uri
    if parts.password is None:
        return uri
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


#: MLflow's error codes for the HTTP statuses of an authentication server's refusals.
_AUTH_CODES: Final = {"UNAUTHENTICATED": 401, "CUSTOMER_UNAUTHORIZED": 401, "PERMISSION_DENIED": 403}


def _refusal_status(exc: BaseException) -> int | None:
    """401 or 403 when ``exc`` (or an exception it was raised from) is the server refusing the caller."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        # REST calls: MlflowException with the code MLflow maps the HTTP status to.
        status = _AUTH_CODES.get(str(getattr(current, "error_code", "")))
        # Artifact uploads/downloads through the server's proxy: requests' HTTPError.
        response = getattr(current, "response", None)
        status = status or getattr(response, "status_code", None)
        if status in (401, 403):
            return status
        current = current.__cause__ or current.__context__
    return None


def _auth_message(status: int, uri: str, action: str) -> str:
    """One line: which server refused whom, doing what, and which variables to set (never the password)."""
    where = f"MLflow at {redact_uri(uri)}"
    user = os.environ.get("MLFLOW_TRACKING_USERNAME", "").strip()
    token = bool(os.environ.get("MLFLOW_TRACKING_TOKEN", "").strip())
    if status == 403:
        who = f"user {user!r}" if user else "this user"
        return (f"{where} refused to {action}: {who} lacks the permission (403); an MLflow admin grants it "
                "(infra/README.md, 'Who may do what')")
    if not user and not token:
        return (f"{where} refused to {action}: it needs credentials (401) and none are set; set "
                "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD")
    who = f"user {user!r}" if user else "the token in MLFLOW_TRACKING_TOKEN"
    return (f"{where} refused to {action}: wrong credentials for {who} (401); check MLFLOW_TRACKING_USERNAME "
            "and MLFLOW_TRACKING_PASSWORD")


_F = TypeVar("_F", bound=Callable[..., Any])


def _explains_refusals(action: str) -> Callable[[_F], _F]:
    """Turn a 401/403 from the MLflow server inside the decorated function into a :class:`RegistryAuthError`.

    The server's URI comes from the call's ``params`` and ``root`` arguments, as the function
    resolves it (:func:`tracking_uri`).
    """

    def decorate(func: _F) -> _F:
        signature = inspect.signature(func)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return func(*args, **kwargs)
            except (MlflowException, OSError) as exc:
                # requests' HTTPError is an OSError; MlflowException covers the REST store.
                status = _refusal_status(exc)
                if status is None:
                    raise
                bound = signature.bind_partial(*args, **kwargs).arguments
                try:
                    uri = tracking_uri(bound["params"], bound.get("root"))
                except (KeyError, MotopsError):
                    uri = os.environ.get("MLFLOW_TRACKING_URI", "the tracking URI")
                raise RegistryAuthError(_auth_message(status, uri, action), status) from None

        return wrapper  # type: ignore[return-value]

    return decorate


def _client(params: RegistryParams, root: str | Path | None) -> tuple[Any, str]:
    from mlflow import MlflowClient

    uri = tracking_uri(params, root)
    return MlflowClient(tracking_uri=uri, registry_uri=uri), uri


def _restore_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


@contextlib.contextmanager
def _tracking(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API (runs, ``log_model``, ``models:/`` downloads) at ``uri`` for the block.

    ``mlflow.set_tracking_uri``/``set_registry_uri`` also set ``MLFLOW_TRACKING_URI`` and
    ``MLFLOW_REGISTRY_URI`` in the environment; the URIs and the variables are put back after
    the block, so nothing leaks into the caller's process.
    """
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    old_env = {name: os.environ.get(name) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    old_tracking = getattr(tracking_utils, "_tracking_uri", None)
    old_registry = getattr(registry_utils, "_registry_uri", None)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(old_tracking)
        mlflow.set_registry_uri(old_registry)
        for name, value in old_env.items():
            _restore_env(name, value)


def _not_found(exc: Exception) -> bool:
    code = getattr(exc, "error_code", "")
    return code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND") or "not found" in str(exc).lower()


def _by_alias(client: Any, name: str, alias: str) -> Any | None:
    """The version of ``name`` with ``alias``, or ``None`` when the model or the alias does not exist."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if _not_found(exc):  # no such model (RESOURCE_DOES_NOT_EXIST) or alias (INVALID_PARAMETER_VALUE)
            return None
        raise


def _model_exists(client: Any, name: str) -> bool:
    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if _not_found(exc):
            return False
        raise
    return True


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# --------------------------------------------------------------------------- values for MLflow


def _key(key: str) -> str:
    """An MLflow-safe key: unsupported characters become ``_``, at most 250 characters."""
    return _KEY_UNSAFE.sub("_", str(key))[:_MAX_KEY]


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return str(value)


def mlflow_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested params as ``{"section.key": str}``, values truncated to MLflow's 6000 characters.

    Lists and other non-strings are written as JSON; keys with characters MLflow refuses get
    ``_`` in their place. An already flat mapping comes back with string values.
    """
    flat: dict[str, str] = {}
    for key, value in params.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            flat.update(mlflow_params(value, dotted))
        else:
            flat[_key(dotted)] = _text(value)[:_MAX_PARAM_VALUE]
    return flat


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _combined(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The combined metrics: every top-level number, and ``fps`` as a number or ``{backend: number}``."""
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        if _is_number(value):
            out[str(key)] = float(value) if isinstance(value, float) else value
        elif key == "fps" and isinstance(value, Mapping):
            out["fps"] = {str(b): float(v) for b, v in value.items() if _is_number(v)}
    return out


def _sequence_metrics(metrics: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """``metrics["sequences"]`` as ``{name: {metric: number}}`` (a mapping by name, or rows with ``sequence``)."""
    raw = metrics.get("sequences") or {}
    if isinstance(raw, Sequence) and not isinstance(raw, str):
        raw = {str(row.get("sequence", i)): row for i, row in enumerate(raw) if isinstance(row, Mapping)}
    if not isinstance(raw, Mapping):
        raise MotopsError(f"metrics['sequences']: expected {{name: {{metric: value}}}} or a list of rows, "
                          f"got {type(raw).__name__}")
    return {str(name): {str(k): float(v) for k, v in row.items() if _is_number(v)}
            for name, row in raw.items() if isinstance(row, Mapping)}


def _metric_entities(metrics: Mapping[str, Any], backend: str) -> list[Any]:
    from mlflow.entities import Metric

    stamp = int(datetime.now(UTC).timestamp() * 1000)
    values: dict[str, float] = {}
    for key, value in _combined(metrics).items():
        if isinstance(value, Mapping):
            values.update({f"fps.{b}": v for b, v in value.items()})
            if backend in value:
                values["fps"] = value[backend]
        else:
            values[key] = float(value)
    for name, row in _sequence_metrics(metrics).items():
        values.update({f"seq.{name}.{k}": v for k, v in row.items()})
    return [Metric(_key(k), float(v), stamp, 0) for k, v in values.items()]


def _numbers(node: Any, prefix: str) -> Iterator[tuple[str, float]]:
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield from _numbers(value, f"{prefix}.{key}")
    elif _is_number(node):
        yield prefix, float(node)


def _training_entities(training: Mapping[str, Any]) -> list[Any]:
    from mlflow.entities import Metric

    stamp = int(datetime.now(UTC).timestamp() * 1000)
    return [Metric(_key(k), v, stamp, 0) for k, v in _numbers(training, "train")]


def _batched(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _version_metric_tags(metrics: Mapping[str, Any]) -> dict[str, str]:
    combined = _combined(metrics)
    tags = {TAG_METRICS: json.dumps(combined, sort_keys=True, separators=(",", ":"))}
    for key, value in combined.items():
        if isinstance(value, Mapping):
            tags.update({f"{TAG_METRIC_PREFIX}{key}.{b}": repr(v) for b, v in value.items()})
        else:
            tags[f"{TAG_METRIC_PREFIX}{key}"] = repr(value)
    return tags


def _metrics_of(client: Any, version: Any) -> dict[str, Any]:
    """The combined metrics of a registered version: its ``motops.metrics`` tag, else its run's metrics."""
    raw = version.tags.get(TAG_METRICS)
    if raw:
        try:
            data = json.loads(raw)
        except json.JSONDecodeError:
            raise RegistryError(f"model version {version.name}/{version.version}: tag {TAG_METRICS} "
                                f"is not JSON ({raw[:80]!r}); expected the metrics written by register()") from None
        if isinstance(data, dict):
            return data
    if version.run_id:
        run_metrics = client.get_run(version.run_id).data.metrics
        return {k: v for k, v in run_metrics.items() if "." not in k}
    return {}


def _same_run_fps(challenger: Any, champion: Any) -> dict[str, Any] | None:
    """The challenger's gate timing beside ``champion``, when it was timed beside this very champion."""
    raw = challenger.tags.get(TAG_SAME_RUN_FPS)
    if champion is None or not raw:
        return None
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
        raise RegistryError(f"model version {challenger.name}/{challenger.version}: tag {TAG_SAME_RUN_FPS} is not "
                            f"JSON ({raw[:80]!r}); expected the timing written by register()") from None
    if not isinstance(data, dict) or data.get("champion_digest") != champion.tags.get(TAG_DIGEST):
        return None  # timed beside another champion: the registered FPS are compared instead
    return data


def _requirements() -> list[str]:
    reqs = []
    for dist in _REQUIREMENTS:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            reqs.append(f"{dist}=={importlib.metadata.version(dist)}")
    return reqs


# --------------------------------------------------------------------------- pyfunc



class EngineModel(mlflow.pyfunc.PythonModel):
    """An engine bundle as an MLflow pyfunc model: ``mlflow.pyfunc.load_model(...).predict(source)``.

    The bundle is the model's ``bundle`` artifact; :meth:`load_context` verifies and loads it
    with :func:`~motops.runtime.bundle.load_bundle`.

    Args:
        backend: Detector backend given to ``load_bundle`` (``auto``, ``onnxruntime``, ``tensorrt``).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    """

    # MLflow wraps ``predict`` for input validation from its type hint, and warns when there is
    # none; no hint it supports says "a path or a DataFrame", so the check is skipped (the
    # same switch MLflow's own ChatModel uses) and ``predict`` checks its input itself.
    # (With no hint on ``model_input``, ``log_model`` infers no signature either.)
    _skip_type_hint_validation = True

    def __init__(self, backend: str = "auto", device: str = "auto") -> None:
        self.backend = backend
        self.device = device
        self.engine: Any = None

    def load_context(self, context: Any) -> None:
        """Verify and load the bundle of ``context.artifacts["bundle"]``."""
        if BUNDLE_ARTIFACT not in context.artifacts:
            raise RegistryError(f"model artifacts {sorted(context.artifacts)} have no '{BUNDLE_ARTIFACT}' entry; "
                                "expected a model logged by motops.registry.register")
        self.engine = load_bundle(context.artifacts[BUNDLE_ARTIFACT], backend=self.backend, device=self.device)

    # ``model_input`` is left without a type hint: MLflow would turn one into a schema.
    def predict(self, context: Any, model_input, params: dict[str, Any] | None = None) -> Any:
        """Track every object of one or more sources.

        Args:
            context: The pyfunc context (unused; the engine is loaded by :meth:`load_context`).
            model_input: A video file or frame folder path (``str``/``Path``), or a pandas
                DataFrame with a ``source`` column (one source per row).
            params: Optional ``max_frames`` (int) to stop each source early.

        Returns:
            A pandas DataFrame with columns :data:`TRACK_COLUMNS` (``frame`` 1-based, ``id``,
            top-left ``x``, ``y``, ``w``, ``h`` in pixels, ``conf``); for a DataFrame input, a
            leading ``source`` column says which row each track comes from.

        Raises:
            RegistryError: The model was not loaded, or the input is neither a path nor a
                DataFrame with a ``source`` column.
        """
        import pandas as pd

        if self.engine is None:
            raise RegistryError(
                "EngineModel.predict called before load_context; load the model with mlflow.pyfunc.load_model"
            )
        max_frames = (params or {}).get("max_frames")
        if isinstance(model_input, str | os.PathLike):
            return self._track_one(model_input, max_frames)
        if isinstance(model_input, pd.DataFrame):
            if "source" not in model_input.columns:
                raise RegistryError(f"model_input: a DataFrame needs a 'source' column (one video or frame "
                                    f"folder per row); got columns {list(model_input.columns)}")
            parts = []
            for source in model_input["source"]:
                part = self._track_one(source, max_frames)
                part.insert(0, "source", str(source))
                parts.append(part)
            if not parts:
                return pd.DataFrame({"source": pd.Series(dtype=str), **_empty_tracks()})
            return pd.concat(parts, ignore_index=True)
        raise RegistryError(f"model_input: expected a path (str) to a video or frame folder, or a DataFrame with "
                            f"a 'source' column; got {type(model_input).__name__}")

    def _track_one(self, source: Any, max_frames: int | None) -> Any:
        from motops.runtime.runner import TRACKS_FILE

        with tempfile.TemporaryDirectory(prefix="motops-predict-") as tmp:
            self.engine.track(str(source), out_dir=tmp, write_video=False, progress=False, max_frames=max_frames)
            return read_tracks(Path(tmp) / TRACKS_FILE)


def _empty_tracks() -> dict[str, Any]:
    import pandas as pd

    return {c: pd.Series(dtype="int64" if c in ("frame", "id") else "float64") for c in TRACK_COLUMNS}


def read_tracks(path: str | Path) -> Any:
    """A MOTChallenge results file (``frame,id,x,y,w,h,conf,...``) as a pandas DataFrame of :data:`TRACK_COLUMNS`."""
    import numpy as np
    import pandas as pd

    text = Path(path).read_text(encoding="ascii").strip()
    if not text:
        return pd.DataFrame(_empty_tracks())
    rows = np.loadtxt(text.splitlines(), delimiter=",", ndmin=2, usecols=range(len(TRACK_COLUMNS)))
    table = pd.DataFrame(rows, columns=list(TRACK_COLUMNS))
    return table.astype({"frame": "int64", "id": "int64"})


# --------------------------------------------------------------------------- register


def _experiment_id(client: Any, params: RegistryParams, uri: str, root: str | Path | None) -> str:
    experiment = client.get_experiment_by_name(params.experiment)
    if experiment is not None:
        if experiment.lifecycle_stage != "active":
            raise RegistryError(f"MLflow experiment '{params.experiment}' at {redact_uri(uri)} is deleted; restore it "
                                "(mlflow experiments restore) or set registry.experiment to another name")
        return experiment.experiment_id
    try:
        return client.create_experiment(params.experiment, artifact_location=artifact_location(params, uri, root))
    except MlflowException as exc:  # created by someone else in between
        experiment = client.get_experiment_by_name(params.experiment)
        if experiment is None:
            raise
        logger.debug("experiment %s created concurrently: %s", params.experiment, exc)
        return experiment.experiment_id


@_explains_refusals("look up registered versions")
def find_version_by_digest(
    params: RegistryParams | Params, digest: str, *, root: str | Path | None = None
) -> str | None:
    """The registered version of ``params.model_name`` whose ``motops.bundle_digest`` tag is ``digest``, or ``None``."""
    params = _registry_params(params)
    client, _ = _client(params, root)
    return _version_with_digest(client, params.model_name, digest)


def _version_with_digest(client: Any, name: str, digest: str) -> str | None:
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise MotopsError(f"bundle digest {digest!r}; expected 64 hex characters (manifest_digest)")
    found = client.search_model_versions(f"name = '{_quoted(name)}' and tags.`{TAG_DIGEST}` = '{digest}'")
    return str(min(int(v.version) for v in found)) if found else None


def _quoted(name: str) -> str:
    return name.replace("'", "\\'")


@_explains_refusals("log a run or register a model version")
def register(
    bundle_dir: str | Path,
    *,
    gate: Mapping[str, Any],
    metrics: Mapping[str, Any],
    params_flat: Mapping[str, Any],
    plots: Sequence[str | Path] = (),
    lineage: Mapping[str, str] | None = None,
    params: RegistryParams | Params,
    training: Mapping[str, Any] | None = None,
    root: str | Path | None = None,
    checkpoints: Sequence[str | Path] = (),
) -> dict[str, Any]:
    """Log an evaluated bundle to MLflow and, when its gate passed, register it as the ``challenger``.

    * Already registered (a version of the model carries this bundle's manifest digest): nothing
      is logged or created; the existing version is returned.
    * Gate failed: one run is logged for the record (tag ``motops.gate`` = ``failed``, params,
      metrics, plots, ``gate.json``) without the engine; no model version is created and no
      alias moves.
    * Gate passed: the same run, plus the bundle as the pyfunc model ``engine``, a new model
      version (description: the gate table; tags: digest, gate, metrics, lineage) and the alias
      ``challenger`` on it.

    Args:
        bundle_dir: The engine bundle (verified first; an altered one is refused before
            anything is logged).
        gate: What :func:`~motops.registry.gates.evaluate_gate` returned for it.
        metrics: The evaluation (``eval.json``): combined numbers and ``sequences``.
        params_flat: The run's params (nested or already ``section.key``); logged as params.
        plots: Image (or any) files logged under ``plots/``.
        lineage: Tags of :func:`~motops.registry.lineage.lineage_tags`, set on the run and the version.
        params: The ``registry`` section (tracking URI, experiment, model name), or the whole params.
        checkpoints: Training checkpoints logged under :data:`CHECKPOINT_DIR` of the run (the detector's
            ``.pt``: the offline labeller runs it at a larger input size than the bundle's fixed ONNX).
        training: Reports of the training and export stages (``{"detector": {...}, ...}``):
            numbers logged as ``train.<stage>.<key>`` metrics, the whole as ``training.json``.
        root: Project root for a relative tracking URI (default: the current directory).

    Returns:
        ``{"created", "version", "run_id", "aliases", "digest", "reason"}``: ``created`` is
        whether a new version was made; ``version`` the new or already registered version
        (``None`` after a failed gate); ``run_id`` the MLflow run logged (``None`` when the
        bundle was already registered and nothing was logged); ``aliases`` those the version
        has; ``reason`` why nothing was created.

    Raises:
        BundleError: The bundle is missing or altered.
        MotopsError: ``gate`` has no boolean ``passed``, or a plot file is missing.
    """
    bundle_dir = Path(bundle_dir)
    manifest = verify_bundle(bundle_dir).raise_if_bad().manifest
    digest = manifest_digest(manifest)
    if not isinstance(gate, Mapping) or not isinstance(gate.get("passed"), bool):
        raise MotopsError("gate: expected the dict of evaluate_gate() with a boolean 'passed'")
    if not isinstance(metrics, Mapping):
        raise MotopsError(f"metrics: expected a mapping (eval.json), got {type(metrics).__name__}")
    plot_paths = [Path(p) for p in plots]
    missing = [str(p) for p in plot_paths if not p.is_file()]
    if missing:
        raise MotopsError(f"plots: {', '.join(missing)} not found; expected files written by the evaluate stage")
    backend = str(gate.get("backend", ""))
    params = _registry_params(params)
    client, uri = _client(params, root)
    name = params.model_name

    existing = _version_with_digest(client, name, digest)
    if existing is not None:
        version = client.get_model_version(name, existing)
        logger.info("bundle %s is already version %s of %s; nothing registered", digest[:12], existing, name)
        return {"created": False, "version": existing, "run_id": None, "aliases": list(version.aliases),
                "digest": digest, "reason": f"bundle already registered as version {existing}"}

    from mlflow.entities import Param, RunTag

    exp_id = _experiment_id(client, params, uri, root)
    passed = gate["passed"]
    run_tags = {**(lineage or {}), TAG_DIGEST: digest, TAG_GATE: "passed" if passed else "failed",
                TAG_BACKEND: backend, "motops.model_version": str(manifest.get("model_version", ""))}
    with _tracking(uri), mlflow.start_run(experiment_id=exp_id, run_name=f"engine-{digest[:12]}") as run:
        run_id = run.info.run_id
        param_list = [Param(k, v) for k, v in mlflow_params(params_flat).items()]
        tag_list = [RunTag(_key(k), _text(v)[:_MAX_RUN_TAG_VALUE]) for k, v in run_tags.items()]
        for chunk in _batched(param_list, _PARAMS_PER_BATCH):
            client.log_batch(run_id, params=chunk)
        for chunk in _batched(tag_list, _PARAMS_PER_BATCH):
            client.log_batch(run_id, tags=chunk)
        metric_list = _metric_entities(metrics, backend) + _training_entities(training or {})
        for chunk in _batched(metric_list, _METRICS_PER_BATCH):
            client.log_batch(run_id, metrics=chunk)
        if training:
            client.log_dict(run_id, json.loads(json.dumps(training, default=str)), "training.json")
        client.log_dict(run_id, dict(gate), "gate.json")
        client.log_dict(run_id, json.loads(json.dumps(metrics, default=str)), "eval.json")
        client.log_text(run_id, format_gate_table(gate), "gate.txt")
        for plot in plot_paths:
            client.log_artifact(run_id, str(plot), "plots")
        for checkpoint in checkpoints:
            if Path(checkpoint).is_file():
                client.log_artifact(run_id, str(checkpoint), CHECKPOINT_DIR)
        if not passed:
            reasons = "; ".join(gate.get("failed", [])) or "gate failed"
            logger.warning("gate failed for bundle %s (%s); run %s logged, nothing registered",
                           digest[:12], reasons, run_id)
            return {"created": False, "version": None, "run_id": run_id, "aliases": [], "digest": digest,
                    "reason": f"gate failed: {reasons}"}
        with tempfile.TemporaryDirectory(prefix="motops-model-") as tmp:
            # "Models from code": the logged model is this script, not a pickle of EngineModel.
            code = Path(tmp) / "engine_model.py"
            code.write_text(_MODEL_CODE, encoding="utf-8")
            info = mlflow.pyfunc.log_model(
                name=ENGINE_ARTIFACT,
                python_model=str(code),
                artifacts={BUNDLE_ARTIFACT: str(bundle_dir)},
                pip_requirements=_requirements(),
                metadata={"bundle_digest": digest, "format": manifest.get("format")},
            )
        if not _model_exists(client, name):
            with contextlib.suppress(MlflowException):  # created concurrently
                client.create_registered_model(name, description="motops multi-object tracking engines")
        version_tags = {**(lineage or {}), **_version_metric_tags(metrics), TAG_DIGEST: digest,
                        TAG_GATE: "passed", TAG_BACKEND: backend}
        if isinstance(gate.get("same_run_fps"), Mapping):
            version_tags[TAG_SAME_RUN_FPS] = json.dumps(gate["same_run_fps"], sort_keys=True)
        created = client.create_model_version(
            name,
            source=info.model_uri,
            run_id=run_id,
            tags={_key(k): _text(v) for k, v in version_tags.items()},
            description=format_gate_table(gate),
            model_id=info.model_id,
        )
        client.set_registered_model_alias(name, CHALLENGER, created.version)
        client.set_tag(run_id, TAG_VERSION, str(created.version))
    logger.info("registered bundle %s as %s version %s (alias %s)", digest[:12], name, created.version, CHALLENGER)
    return {"created": True, "version": str(created.version), "run_id": run_id, "aliases": [CHALLENGER],
            "digest": digest, "reason": None}


# --------------------------------------------------------------------------- read


@_explains_refusals("read the champion")
def champion_metrics(params: RegistryParams | Params, *, root: str | Path | None = None) -> dict[str, Any] | None:
    """The combined metrics of the version with alias ``champion``.

    Args:
        params: The ``registry`` section (or the whole params).
        root: Project root for a relative tracking URI (default: the current directory).

    Returns:
        The metrics registered with it (``idf1``, ``hota``, ``fps``...), or ``None`` when the
        model or a champion does not exist.
    """
    params = _registry_params(params)
    client, _ = _client(params, root)
    version = _by_alias(client, params.model_name, CHAMPION)
    return None if version is None else _metrics_of(client, version)


def _created(ms: int | None) -> str | None:
    if not ms:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@_explains_refusals("read the registered model")
def show(params: RegistryParams | Params, *, root: str | Path | None = None) -> dict[str, Any]:
    """The registered model and its versions, newest first, as JSON-able data.

    Args:
        params: The ``registry`` section (or the whole params).
        root: Project root for a relative tracking URI (default: the current directory).

    Returns:
        ``{"model", "tracking_uri", "exists", "aliases": {alias: version}, "versions": [{"version",
        "aliases", "description", "tags", "run_id", "source", "status", "created"}]}``.
    """
    params = _registry_params(params)
    client, uri = _client(params, root)
    name = params.model_name
    if not _model_exists(client, name):
        return {"model": name, "tracking_uri": redact_uri(uri), "exists": False, "aliases": {}, "versions": []}
    # search_model_versions leaves the aliases out: they come from the registered model.
    aliases = {alias: str(version) for alias, version in client.get_registered_model(name).aliases.items()}
    versions = client.search_model_versions(f"name = '{_quoted(name)}'")
    rows = []
    for v in sorted(versions, key=lambda v: int(v.version), reverse=True):
        rows.append({
            "version": str(v.version),
            "aliases": sorted(a for a, target in aliases.items() if target == str(v.version)),
            "description": v.description or "",
            "tags": dict(sorted(v.tags.items())),
            "run_id": v.run_id,
            "source": v.source,
            "status": v.status,
            "created": _created(v.creation_timestamp),
        })
    return {"model": name, "tracking_uri": redact_uri(uri), "exists": True, "aliases": dict(sorted(aliases.items())),
            "versions": rows}


# --------------------------------------------------------------------------- download


#: Run artifact folder of the training checkpoints (``detector.pt``) logged with a registered engine.
CHECKPOINT_DIR = "training"


def download_for_labelling(
    params: RegistryParams | Params, dst: str | Path, *, alias: str = "champion", root: str | Path | None = None
) -> dict[str, Any]:
    """The engine that labels unlabelled footage: the bundle of ``alias`` and, when its run logged it, ``detector.pt``.

    Returns:
        ``{"version", "model", "bundle", "detector_pt" (None when the run has none)}`` with the
        files under ``dst``.

    Raises:
        RegistryError: No version has the alias (no champion yet).
    """
    reg = _registry_params(params)
    client, uri = _client(reg, root)
    version = _resolve(client, f"models:/{reg.model_name}@{alias}")
    dst = Path(dst)
    bundle = download_bundle(f"models:/{reg.model_name}/{version.version}", dst / "bundle", reg, root=root)
    detector_pt = None
    if version.run_id:
        try:
            with _tracking(uri):
                local = mlflow.artifacts.download_artifacts(
                    run_id=version.run_id, artifact_path=CHECKPOINT_DIR, dst_path=str(dst / "pt"), tracking_uri=uri)
            found = sorted(Path(local).glob("*.pt"))
            detector_pt = found[0] if found else None
        except (MlflowException, OSError):
            detector_pt = None  # registered before checkpoints were logged: the bundle's ONNX labels
    return {"version": str(version.version), "model": reg.model_name, "bundle": bundle, "detector_pt": detector_pt}


def _resolve(client: Any, model_uri: str) -> Any:
    match = _MODEL_URI.match(model_uri.strip()) if isinstance(model_uri, str) else None
    if match is None:
        raise ConfigError(f"model URI {model_uri!r}; expected models:/NAME@ALIAS or models:/NAME/VERSION")
    name = match["name"]
    if match["alias"]:
        version = _by_alias(client, name, match["alias"])
        if version is None:
            raise RegistryError(f"{model_uri}: model '{name}' has no version with alias '{match['alias']}'")
        return version
    try:
        return client.get_model_version(name, match["version"])
    except MlflowException as exc:
        if _not_found(exc):
            raise RegistryError(f"{model_uri}: model '{name}' has no version {match['version']}") from None
        raise


def _bundle_inside(model_dir: Path) -> Path:
    """The bundle folder inside a downloaded pyfunc model (from its MLmodel), or the model folder itself."""
    from mlflow.models import Model

    if (model_dir / MANIFEST_FILE).is_file():
        return model_dir
    mlmodel = model_dir / "MLmodel"
    if mlmodel.is_file():
        flavor = Model.load(str(mlmodel)).flavors.get("python_function", {})
        entry = (flavor.get("artifacts") or {}).get(BUNDLE_ARTIFACT)
        if isinstance(entry, Mapping) and entry.get("path"):
            return model_dir / entry["path"]
    found = sorted(p.parent for p in model_dir.rglob(MANIFEST_FILE))
    if len(found) == 1:
        return found[0]
    raise RegistryError(f"{model_dir}: no engine bundle found in the downloaded model (expected "
                        f"artifacts/ holding {MANIFEST_FILE})")


@_explains_refusals("download a registered model")
def download_bundle(
    model_uri: str, dst: str | Path, params: RegistryParams | Params, *, root: str | Path | None = None
) -> Path:
    """Download a registered engine bundle and verify it.

    Args:
        model_uri: ``models:/NAME@ALIAS`` (e.g. ``models:/motops-tracker@champion``) or
            ``models:/NAME/VERSION``. The alias is resolved once, so a concurrent promotion
            cannot mix two versions.
        dst: The bundle folder to write. An existing bundle there is replaced once the new one
            is verified; a folder holding anything else is refused.
        params: The ``registry`` section (or the whole params).
        root: Project root for a relative tracking URI (default: the current directory).

    Returns:
        ``dst``, an intact bundle whose manifest digest is the version's ``motops.bundle_digest``.

    Raises:
        ConfigError: ``model_uri`` is not of either form.
        RegistryError: No such version or alias; no bundle in the model; ``dst`` is not
            replaceable; the digest differs from the one registered.
        BundleError: The downloaded bundle is altered (every offending file named).
    """
    client, uri = _client(_registry_params(params), root)
    version = _resolve(client, model_uri)
    dst = Path(dst)
    if dst.exists() and (not dst.is_dir() or (any(dst.iterdir()) and not (dst / MANIFEST_FILE).is_file())):
        raise RegistryError(f"{dst}: exists and is not an engine bundle; refusing to replace it "
                            "(choose an empty or new folder)")
    dst.parent.mkdir(parents=True, exist_ok=True)
    staging = dst.parent / f".{dst.name}.download-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        with _tracking(uri):  # models:/ URIs are resolved with the global registry URI
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{version.name}/{version.version}", dst_path=str(staging), tracking_uri=uri
            )
        bundle = _bundle_inside(Path(local))
        report = verify_bundle(bundle).raise_if_bad()
        expected = version.tags.get(TAG_DIGEST)
        actual = manifest_digest(report.manifest)
        if expected and expected != actual:
            raise RegistryError(f"{model_uri} (version {version.version}): downloaded manifest digest {actual} "
                                f"differs from the registered {TAG_DIGEST} {expected}")
        old = dst.parent / f".{dst.name}.old-{uuid.uuid4().hex[:8]}"
        if dst.exists():
            os.rename(dst, old)
        try:
            os.rename(bundle, dst)
        except BaseException:
            if old.exists() and not dst.exists():
                os.rename(old, dst)
            raise
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("downloaded %s (version %s) to %s", model_uri, version.version, dst)
    return dst


# --------------------------------------------------------------------------- aliases


@_explains_refusals("move the champion alias")
def promote(
    params: RegistryParams | Params,
    gates: GatesParams,
    *,
    backend: str,
    force: bool = False,
    reason: str | None = None,
    root: str | Path | None = None,
) -> dict[str, Any]:
    """Make the ``challenger`` the ``champion`` when it is not worse than the current champion.

    The challenger's registered metrics go through :func:`~motops.registry.gates.evaluate_gate`
    with the current champion's. On a pass (or ``force``) the aliases move: the old champion
    becomes ``previous``, the challenger becomes ``champion`` and loses ``challenger``.

    Args:
        params: The ``registry`` section (or the whole params).
        gates: The gates; ``max_regression`` bounds how much worse than the champion a
            challenger may be.
        backend: Backend whose FPS minimum and FPS regression apply.
        force: Promote even when the gate fails. Needs ``reason``.
        reason: Why a failing challenger is forced through; recorded on the version as
            ``motops.forced_reason``.
        root: Project root for a relative tracking URI (default: the current directory).

    Returns:
        ``{"model", "promoted": True, "champion", "previous", "forced", "reason", "gate"}``: the
        version that became champion, the one that became ``previous`` (``None`` when there was
        no champion), whether the gate was overridden and why.

    Raises:
        ConfigError: ``force`` without a non-empty ``reason``.
        RegistryError: No version has alias ``challenger``.
        PromotionRefused: The gate failed and ``force`` is off; no alias moved.
    """
    if force and (not isinstance(reason, str) or not reason.strip()):
        raise ConfigError("promote(force=True) needs a non-empty reason; it is recorded on the promoted version")
    params = _registry_params(params)
    client, uri = _client(params, root)
    name = params.model_name
    challenger = _by_alias(client, name, CHALLENGER)
    if challenger is None:
        raise RegistryError(f"model '{name}' at {uri} has no version with alias '{CHALLENGER}'; register an engine "
                            "that passes the gates first (motops.registry.register)")
    champion = _by_alias(client, name, CHAMPION)
    if champion is not None and champion.version == challenger.version:
        raise RegistryError(f"model '{name}': version {challenger.version} is already '{CHAMPION}'")
    champ_metrics = None if champion is None else _metrics_of(client, champion)
    gate = evaluate_gate(_metrics_of(client, challenger), gates, backend=backend, champion=champ_metrics,
                         same_run_fps=_same_run_fps(challenger, champion))
    if not gate["passed"] and not force:
        raise PromotionRefused(
            f"model '{name}': challenger version {challenger.version} not promoted"
            + (f" over champion version {champion.version}" if champion is not None else "")
            + ":\n" + format_gate_table(gate) + "\n(promote with force=True and a reason to override)",
            gate,
        )
    forced = not gate["passed"]
    v = str(challenger.version)
    # Order: previous first, so a crash midway never leaves the old champion without an alias.
    if champion is not None:
        client.set_registered_model_alias(name, PREVIOUS, champion.version)
    client.set_registered_model_alias(name, CHAMPION, v)
    client.delete_registered_model_alias(name, CHALLENGER)
    client.set_model_version_tag(name, v, TAG_PROMOTED_AT, _now())
    client.set_model_version_tag(name, v, TAG_PROMOTION, "forced" if forced else "gate passed")
    client.set_model_version_tag(name, v, "motops.promotion_gate", json.dumps(gate, sort_keys=True))
    if forced:
        client.set_model_version_tag(name, v, TAG_FORCED_REASON, reason.strip())  # type: ignore[union-attr]
        logger.warning("forced promotion of %s version %s: %s", name, v, reason)
    previous = None if champion is None else str(champion.version)
    logger.info("promoted %s version %s to %s (previous: %s)", name, v, CHAMPION, previous)
    return {"model": name, "promoted": True, "champion": v, "previous": previous, "forced": forced,
            "reason": reason.strip() if forced else None, "gate": gate}  # type: ignore[union-attr]


@_explains_refusals("move the champion alias")
def rollback(params: RegistryParams | Params, *, root: str | Path | None = None) -> dict[str, Any]:
    """Give ``champion`` back to the ``previous`` version.

    The rolled-back version loses ``champion`` and is tagged ``motops.rolled_back`` (UTC
    time); ``previous`` is removed (a second rollback needs a new promotion first).

    Args:
        params: The ``registry`` section (or the whole params).
        root: Project root for a relative tracking URI (default: the current directory).

    Returns:
        ``{"model", "champion", "rolled_back"}`` (``rolled_back`` is ``None`` when there was no champion).

    Raises:
        RegistryError: No version has alias ``previous``.
    """
    params = _registry_params(params)
    client, uri = _client(params, root)
    name = params.model_name
    previous = _by_alias(client, name, PREVIOUS)
    if previous is None:
        raise RegistryError(f"model '{name}' at {uri} has no version with alias '{PREVIOUS}'; nothing to roll "
                            "back to (a rollback needs a promotion that replaced a champion)")
    champion = _by_alias(client, name, CHAMPION)
    client.set_registered_model_alias(name, CHAMPION, previous.version)
    client.delete_registered_model_alias(name, PREVIOUS)
    rolled_back = None
    if champion is not None and champion.version != previous.version:
        rolled_back = str(champion.version)
        client.set_model_version_tag(name, rolled_back, TAG_ROLLED_BACK, _now())
    logger.warning("rolled %s back: champion is version %s again (was %s)", name, previous.version, rolled_back)
    return {"model": name, "champion": str(previous.version), "rolled_back": rolled_back}
