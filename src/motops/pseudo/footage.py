"""Unlabelled footage: a video file, or a folder of frames with its frame rate.

An unlabelled batch in the inbox is one of

* a video file (:data:`VIDEO_SUFFIXES`); its frame rate is the container's;
* a folder of frames (images directly in it, or in ``img1/``) and no ``gt/gt.txt``; its frame
  rate comes from ``fps.txt`` (one number, frames per second) or a ``seqinfo.ini``
  (``frameRate``). A folder without either is refused: a guessed rate would scale every
  tracker buffer and the validation's gap limit wrongly.

:func:`open_footage` checks it (decodable, a frame rate) before anything is versioned;
:func:`write_frames` lays its frames out as ``img1/000001.jpg ...`` of a MOTChallenge sequence.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Final

import cv2
import numpy as np

from motops.errors import DataFormatError
from motops.runtime.video import IMAGE_SUFFIXES, FrameSource, SourceError, open_source

VIDEO_SUFFIXES: Final = (".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".mpg", ".mpeg")
#: File in a folder of frames that gives its frame rate.
FPS_FILE: Final = "fps.txt"
#: JPEG quality of the frames decoded from a video.
JPEG_QUALITY: Final = 95


def _image_dir(folder: Path) -> Path | None:
    for candidate in (folder, folder / "img1"):
        if candidate.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in candidate.iterdir()):
            return candidate
    return None


def unlabelled_kind(path: Path) -> str | None:
    """``"video"``, ``"frames"`` or None (not unlabelled footage: labelled, or unknown)."""
    path = Path(path)
    if path.is_file():
        return "video" if path.suffix.lower() in VIDEO_SUFFIXES else None
    if not path.is_dir() or (path / "gt" / "gt.txt").is_file():
        return None
    if any((p / "gt" / "gt.txt").is_file() for p in path.iterdir() if p.is_dir()):
        return None
    return "frames" if _image_dir(path) is not None else None


def folder_fps(folder: Path) -> float:
    """Frame rate of a folder of frames, from ``fps.txt`` or ``seqinfo.ini``.

    Raises:
        DataFormatError: neither is there, or the value is not a positive number (the file named).
    """
    from motops.data.mot import read_seqinfo

    fps_file = folder / FPS_FILE
    if fps_file.is_file():
        text = fps_file.read_text(encoding="utf-8", errors="replace").strip()
        try:
            fps = float(text)
        except ValueError:
            fps = 0.0
        if not 0 < fps <= 1000:
            raise DataFormatError(fps_file, f"expected one number, the frames per second (e.g. 7), got {text[:40]!r}")
        return fps
    if (folder / "seqinfo.ini").is_file():
        return read_seqinfo(folder / "seqinfo.ini").fps
    raise DataFormatError(folder, f"a folder of frames without a frame rate; add {FPS_FILE} holding the frames per "
                                  "second (e.g. 7), or a seqinfo.ini with frameRate")


def _video_fps(path: Path) -> float:
    capture = cv2.VideoCapture(str(path))
    try:
        fps = capture.get(cv2.CAP_PROP_FPS) if capture.isOpened() else 0.0
    finally:
        capture.release()
    if not (fps and np.isfinite(fps) and 0 < fps <= 1000):
        raise DataFormatError(path, "the video states no frame rate; convert it to frames in a folder with fps.txt")
    return float(fps)


def open_footage(path: str | Path) -> FrameSource:
    """Open an unlabelled batch (video or folder of frames), its frame rate checked.

    Returns:
        A :class:`~motops.runtime.video.FrameSource` yielding ``(frame, image_bgr)`` from 1.

    Raises:
        DataFormatError: not a video or a folder of frames, no frame rate, or it cannot be
            decoded (one line, naming the file).
    """
    path = Path(path)
    kind = unlabelled_kind(path)
    if kind is None:
        raise DataFormatError(path, f"not unlabelled footage; expected a video ({', '.join(VIDEO_SUFFIXES)}) or a "
                                    f"folder of frames with {FPS_FILE}")
    try:
        if kind == "video":
            source = open_source(path)  # refuses a video whose first frame cannot be decoded
            try:
                source.fps = _video_fps(path)
            except DataFormatError:
                source.close()
                raise
            return source
        fps = folder_fps(path)
        return open_source(_image_dir(path), fps=fps)
    except SourceError as exc:
        raise DataFormatError(exc.name, f"cannot be decoded: {exc.message}") from None


def write_frames(source: FrameSource, img_dir: Path) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``source``'s frames, writing each as ``img_dir/{frame:06d}.jpg`` on the way.

    Frames of a folder are linked (or copied) when they are JPEGs already; others are encoded.

    Raises:
        DataFormatError: a frame cannot be decoded or written.
    """
    from motops.data.mot import link_or_copy

    img_dir.mkdir(parents=True, exist_ok=True)
    files = getattr(source, "files", None)
    try:
        for index, frame in source:
            dst = img_dir / f"{index:06d}.jpg"
            if files is not None and Path(files[index - 1]).suffix.lower() in (".jpg", ".jpeg"):
                link_or_copy(files[index - 1], dst)
            elif not cv2.imwrite(str(dst), frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
                raise DataFormatError(dst, "cannot write the frame")
            yield index, frame
    except SourceError as exc:
        raise DataFormatError(exc.name, f"cannot be decoded: {exc.message}") from None
