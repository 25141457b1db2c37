"""MOTChallenge ``seqinfo.ini``: the sequence description (name, frame rate, length, size).

Kept apart from :mod:`motops.data.mot` (which needs polars) because the runtime reads it too:
``motops track`` on an image-sequence folder takes its frame rate from here.
"""

from __future__ import annotations

import configparser
import math
import re
from dataclasses import dataclass
from pathlib import Path

from motops.errors import DataFormatError

#: Keys of the ``[Sequence]`` section of ``seqinfo.ini``.
SEQINFO_KEYS: tuple[str, ...] = (
    "name",
    "imDir",
    "frameRate",
    "seqLength",
    "imWidth",
    "imHeight",
    "imExt",
)


@dataclass(frozen=True)
class SeqInfo:
    """The ``[Sequence]`` section of a ``seqinfo.ini``.

    Attributes:
        name: Sequence name (``name``).
        im_dir: Image folder inside the sequence folder (``imDir``), e.g. ``img1``.
        fps: Frame rate in frames per second (``frameRate``).
        length: Number of frames (``seqLength``).
        width: Image width in pixels (``imWidth``).
        height: Image height in pixels (``imHeight``).
        im_ext: Image file extension with the dot (``imExt``), e.g. ``.jpg``.
    """

    name: str
    im_dir: str
    fps: float
    length: int
    width: int
    height: int
    im_ext: str

    def frame_files(self) -> list[str]:
        """Image paths relative to the sequence folder, frame 1 first.

        Returns:
            ``length`` strings ``"{im_dir}/{frame:06d}{im_ext}"``.
        """
        return [f"{self.im_dir}/{i:06d}{self.im_ext}" for i in range(1, self.length + 1)]

# --------------------------------------------------------------------------- seqinfo


def _key_line(text: str, key: str) -> int | None:
    """1-based line of ``key = …`` in an ini text, or None."""
    pattern = re.compile(rf"^\s*{re.escape(key)}\s*[=:]", re.IGNORECASE)
    for number, line in enumerate(text.splitlines(), start=1):
        if pattern.match(line):
            return number
    return None


def read_seqinfo(path: str | Path) -> SeqInfo:
    """Read a MOTChallenge ``seqinfo.ini``.

    Args:
        path: The ``seqinfo.ini`` file (keys are matched case-insensitively).

    Returns:
        The parsed :class:`SeqInfo`.

    Raises:
        DataFormatError: the file is missing or unreadable, has no ``[Sequence]``
            section, lacks a key, or ``seqLength``/``imWidth``/``imHeight`` is not a
            positive integer or ``frameRate`` not a positive number.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, "seqinfo.ini not found; a MOTChallenge sequence folder needs one")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataFormatError(path, f"cannot read seqinfo.ini: {exc}") from exc
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text, source=str(path))
    except configparser.Error as exc:
        raise DataFormatError(path, f"not a valid ini file: {exc}", line=getattr(exc, "lineno", None)) from exc
    if not parser.has_section("Sequence"):
        raise DataFormatError(path, f"no [Sequence] section; expected one with keys {', '.join(SEQINFO_KEYS)}")
    section = parser["Sequence"]
    values: dict[str, str] = {}
    for key in SEQINFO_KEYS:
        value = section.get(key)
        if value is None or not value.strip():
            raise DataFormatError(path, f"[Sequence] key '{key}' is missing or empty")
        values[key] = value.strip()

    def positive_int(key: str) -> int:
        raw = values[key]
        try:
            number = int(raw)
        except ValueError:
            number = 0
        if number <= 0:
            raise DataFormatError(
                path, f"[Sequence] key '{key}' must be a positive integer, got {raw!r}", line=_key_line(text, key)
            )
        return number

    try:
        fps = float(values["frameRate"])
    except ValueError:
        fps = math.nan
    if not (math.isfinite(fps) and fps > 0):
        raise DataFormatError(
            path,
            f"[Sequence] key 'frameRate' must be a positive number, got {values['frameRate']!r}",
            line=_key_line(text, "frameRate"),
        )
    im_ext = values["imExt"]
    if not im_ext.startswith("."):
        im_ext = "." + im_ext
    return SeqInfo(
        name=values["name"],
        im_dir=values["imDir"].strip("/"),
        fps=fps,
        length=positive_int("seqLength"),
        width=positive_int("imWidth"),
        height=positive_int("imHeight"),
        im_ext=im_ext,
    )


def write_seqinfo(path: str | Path, info: SeqInfo) -> None:
    """Write ``info`` as a MOTChallenge ``seqinfo.ini`` (parent folders are created).

    Args:
        path: Destination file.
        info: The sequence description.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fps = int(info.fps) if float(info.fps).is_integer() else info.fps
    lines = [
        "[Sequence]",
        f"name={info.name}",
        f"imDir={info.im_dir}",
        f"frameRate={fps}",
        f"seqLength={info.length}",
        f"imWidth={info.width}",
        f"imHeight={info.height}",
        f"imExt={info.im_ext}",
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")
