"""Video in and out: frame sources (file, folder of frames, stream), an mp4 writer, track drawing.

:func:`open_source` gives one iterator interface over

* a video file (anything OpenCV's FFmpeg backend decodes: ``.mp4``, ``.avi``, ``.mkv``, ...);
* a folder of frames: a MOTChallenge sequence folder (``seqinfo.ini`` gives the frame rate and
  the image folder), its ``img1/`` folder (the ``seqinfo.ini`` one level up is used), or any
  folder of images, read in file-name order;
* a stream: ``rtsp://``, ``rtmp://``, ``http(s)://``, ``udp://``, ``tcp://`` URLs and webcam
  indices (``0`` or ``"0"``); its length is unknown.

Frames are numbered from 1 (the MOTChallenge convention). A source that cannot be opened or
whose first frame cannot be decoded is refused when it is opened, with an error naming it.
"""

from __future__ import annotations

import queue
import re
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Final, TypeVar

import cv2
import numpy as np

from motops.errors import MotopsError
from motops.runtime.types import TRACK_ID

IMAGE_SUFFIXES: Final = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
STREAM_SCHEMES: Final = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp")
#: Frame rate assumed for a folder of images without ``seqinfo.ini`` (and a stream that reports none).
DEFAULT_FPS: Final = 30.0
#: Centre points remembered per track for its trail.
TRAIL_LENGTH: Final = 20
#: A trail is forgotten once its track has not been drawn for this many frames.
TRAIL_TIMEOUT: Final = 30
#: Frames :func:`prefetch` decodes ahead of the consumer.
PREFETCH_DEPTH: Final = 4

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


class SourceError(MotopsError):
    """A frame source exists but cannot be read; the message starts with the file, folder or URL."""

    def __init__(self, name: str | Path, message: str) -> None:
        self.name = str(name)
        self.message = message
        super().__init__(f"{name}: {message}")


def _redact(url: str) -> str:
    """The URL without its password (``rtsp://user:***@host``), for error messages and logs."""
    return re.sub(r"^([a-zA-Z][a-zA-Z0-9+.-]*://[^:/@]+):[^@/]*@", r"\1:***@", url)


class FrameSource:
    """Frames of a video, a folder or a stream, as ``(frame_index, frame_bgr)`` pairs.

    Build one with :func:`open_source`; iterate it once. Use it as a context manager, or call
    :meth:`close`, to release a capture device.

    Attributes:
        name: The source as given (a stream URL without its password).
        kind: ``video``, ``folder`` or ``stream``.
        fps: Frames per second (from the container, ``seqinfo.ini``, or :data:`DEFAULT_FPS`).
        size: ``(width, height)`` of the frames, pixels.
        length: Number of frames, or ``None`` for a stream (for a video, the container's count,
            which some codecs only estimate).
    """

    def __init__(self, name: str, kind: str, fps: float, size: tuple[int, int], length: int | None) -> None:
        self.name = name
        self.kind = kind
        self.fps = fps
        self.size = size
        self.length = length

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        raise NotImplementedError

    def close(self) -> None:
        """Release the capture (nothing to do for a folder)."""

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        w, h = self.size
        return f"{type(self).__name__}({self.name!r}, {w}x{h}, fps={self.fps:g}, length={self.length})"


class FolderSource(FrameSource):
    """Images of a folder in file-name order (``000001.jpg``, ``000002.jpg``, ...)."""

    def __init__(self, name: str, files: list[Path], fps: float) -> None:
        first = _read_image(files[0])
        super().__init__(name, "folder", fps, (first.shape[1], first.shape[0]), len(files))
        self.files = files
        self._first = first

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        for index, path in enumerate(self.files, start=1):
            if index == 1 and self._first is not None:
                frame, self._first = self._first, None
            else:
                frame = _read_image(path)
            yield index, frame


def _read_image(path: Path) -> np.ndarray:
    frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if frame is None:
        raise SourceError(path, "cannot decode the image (corrupt, or not an image)")
    return frame


class CaptureSource(FrameSource):
    """A video file or a stream read through ``cv2.VideoCapture``."""

    def __init__(self, name: str, kind: str, capture: cv2.VideoCapture, first: np.ndarray) -> None:
        fps = capture.get(cv2.CAP_PROP_FPS)
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        length = count if kind == "video" and count > 0 else None
        fps = float(fps) if fps and np.isfinite(fps) and 0 < fps <= 1000 else DEFAULT_FPS
        super().__init__(name, kind, fps, (first.shape[1], first.shape[0]), length)
        self._capture = capture
        self._first: np.ndarray | None = first

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        if self._first is None:
            raise RuntimeError(f"{self.name}: a frame source can be iterated only once")
        frame, self._first = self._first, None
        index = 1
        while True:
            yield index, frame
            ok, frame = self._capture.read()
            if not ok or frame is None:
                return
            index += 1

    def close(self) -> None:
        self._capture.release()


def _open_capture(target: str | int, name: str, kind: str) -> CaptureSource:
    capture = cv2.VideoCapture(target)
    if not capture.isOpened():
        capture.release()
        what = "cannot open the stream (unreachable, wrong URL, or no such camera)" if kind == "stream" else (
            "cannot open the video (not a video file, or a codec OpenCV's FFmpeg backend lacks)"
        )
        raise SourceError(name, what)
    ok, first = capture.read()
    if not ok or first is None:
        capture.release()
        raise SourceError(name, f"opened but no frame could be decoded from this {kind}")
    if first.ndim == 2:
        first = cv2.cvtColor(first, cv2.COLOR_GRAY2BGR)
    return CaptureSource(name, kind, capture, first)


def _folder_source(folder: Path, fps: float | None) -> FolderSource:
    from motops.data.seqinfo import read_seqinfo

    seqinfo = None
    if (folder / "seqinfo.ini").is_file():
        seqinfo = folder / "seqinfo.ini"
    elif (folder.parent / "seqinfo.ini").is_file():
        seqinfo = folder.parent / "seqinfo.ini"
    image_dir = folder
    if seqinfo is not None:
        info = read_seqinfo(seqinfo)
        if seqinfo.parent == folder:
            image_dir = folder / info.im_dir
            if not image_dir.is_dir():
                raise SourceError(seqinfo, f"imDir={info.im_dir} but {image_dir} is not a folder")
        fps = fps or info.fps
    files = sorted(p for p in image_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SourceError(image_dir, f"no image files in the folder; expected frames with a suffix in {IMAGE_SUFFIXES}")
    return FolderSource(str(folder), files, float(fps or DEFAULT_FPS))


def open_source(source: str | Path | int, *, fps: float | None = None) -> FrameSource:
    """Open a video file, a folder of frames or a stream.

    Args:
        source: A video file, a folder (MOTChallenge sequence, its ``img1``, or any folder of
            images), a stream URL (``rtsp://``, ``http://``, ...) or a webcam index.
        fps: Frame rate to assume where the source does not state one (a folder without
            ``seqinfo.ini``); ``None``: :data:`DEFAULT_FPS`. A ``seqinfo.ini`` or a video
            container's rate takes precedence for folders and files respectively.

    Returns:
        A :class:`FrameSource` yielding ``(frame_index, frame_bgr (H, W, 3) uint8)``, the first
        index being 1, with ``.fps``, ``.size`` (width, height) and ``.length`` (None for streams).

    Raises:
        FileNotFoundError: A path that does not exist (and is not a stream).
        SourceError: The source exists but cannot be decoded, a folder holds no image, or
            an image cannot be decoded (the message names the file or URL).
        DataFormatError: A ``seqinfo.ini`` next to the frames is malformed.
    """
    if fps is not None and not (isinstance(fps, int | float) and fps > 0):
        raise ValueError(f"fps={fps!r}; expected a positive number")
    if isinstance(source, int) and not isinstance(source, bool):
        return _open_capture(source, f"camera {source}", "stream")
    text = str(source)
    if text.isdigit():
        return _open_capture(int(text), f"camera {text}", "stream")
    match = _SCHEME.match(text)
    if match and match.group(1).lower() in STREAM_SCHEMES:
        return _open_capture(text, _redact(text), "stream")
    path = Path(text)
    if not path.exists():
        raise FileNotFoundError(f"{path}: source not found (expected a video file, a folder of frames or a stream URL)")
    if path.is_dir():
        return _folder_source(path, fps)
    return _open_capture(str(path), str(path), "video")


_DONE = object()
_Item = TypeVar("_Item")


def prefetch(frames: Iterable[_Item], depth: int = PREFETCH_DEPTH) -> Iterator[_Item]:
    """Iterate ``frames`` while a background thread decodes up to ``depth`` frames ahead.

    JPEG and video decoding release the GIL, so on a multi-core CPU the next frame is decoded
    while the current one is detected and tracked. Items come out in order; an exception raised
    while decoding is raised here, at the frame where it happened. Leaving the loop early
    (``break``, an exception, closing the generator) stops the thread before this returns, so
    the source can be closed right after.

    Args:
        frames: A frame source (or any iterable of ``(index, frame)``).
        depth: Most frames held in memory ahead of the consumer (>= 1).

    Raises:
        ValueError: ``depth < 1``.
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"prefetch: depth={depth!r}; expected an integer >= 1")
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def reader() -> None:
        try:
            for item in frames:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            put(exc)

    thread = threading.Thread(target=reader, name="motops-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


class VideoWriter:
    """An mp4 (``mp4v``) writer that refuses to start silently broken.

    Args:
        path: Output file (parent folders are created).
        fps: Frames per second.
        size: ``(width, height)``; every frame must have it.

    Raises:
        OSError: OpenCV cannot open a writer for ``path``.
    """

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.size = (int(size[0]), int(size[1]))
        self.frames = 0
        self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), self.size)
        if not self._writer.isOpened():
            raise OSError(f"{self.path}: OpenCV could not open an mp4v video writer")

    def write(self, frame: np.ndarray) -> None:
        """Append one BGR frame ``(height, width, 3)`` uint8."""
        if frame.shape[1::-1] != self.size:
            raise ValueError(f"{self.path}: frame {self.frames + 1} is {frame.shape[1]}x{frame.shape[0]}, "
                             f"the video is {self.size[0]}x{self.size[1]}")
        self._writer.write(frame)
        self.frames += 1

    def close(self) -> None:
        """Finish the file (writes the index; the video is unreadable before)."""
        self._writer.release()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def id_colour(track_id: int) -> tuple[int, int, int]:
    """A BGR colour fixed per id; neighbouring ids get far-apart hues (golden-ratio steps)."""
    hue = int((track_id * 0.618033988749895 % 1.0) * 180)
    sat, val = 200 + 55 * (track_id % 2), 255 - 60 * ((track_id // 2) % 2)
    bgr = cv2.cvtColor(np.uint8([[[hue, sat, val]]]), cv2.COLOR_HSV2BGR)[0, 0]
    return int(bgr[0]), int(bgr[1]), int(bgr[2])


class Trails:
    """The last few box centres of each track id, for drawing trails.

    Args:
        length: Centre points kept per id.
        timeout: Frames after which an id that was not updated is forgotten (bounds memory
            on long streams).
    """

    def __init__(self, length: int = TRAIL_LENGTH, timeout: int = TRAIL_TIMEOUT) -> None:
        self.length = length
        self.timeout = timeout
        self.points: dict[int, deque[tuple[int, int]]] = {}
        self._last_seen: dict[int, int] = {}
        self._frame = 0

    def update(self, tracks: np.ndarray) -> None:
        """Append the centre of each track of ``tracks`` ``(M, 8)`` and forget stale ids."""
        self._frame += 1
        for row in np.asarray(tracks).reshape(-1, 8):
            tid = int(row[TRACK_ID])
            centre = (int(round((row[0] + row[2]) / 2)), int(round((row[1] + row[3]) / 2)))
            self.points.setdefault(tid, deque(maxlen=self.length)).append(centre)
            self._last_seen[tid] = self._frame
        for tid in [t for t, seen in self._last_seen.items() if self._frame - seen > self.timeout]:
            del self.points[tid], self._last_seen[tid]


def draw_tracks(frame: np.ndarray, tracks: np.ndarray, trails: Trails | None = None) -> np.ndarray:
    """Draw boxes, ids and trails on a copy of ``frame``.

    Args:
        frame: BGR image ``(H, W, 3)`` uint8 (not modified).
        tracks: ``(M, 8)`` ``[x1, y1, x2, y2, track_id, conf, cls, det_index]``; rows with
            ``det_index = -1`` (predicted or propagated, no detection this frame) get a thin box.
        trails: Centre history to draw (call ``trails.update(tracks)`` first); ``None``: no trails.

    Returns:
        The annotated copy.
    """
    out = frame.copy()
    if trails is not None:
        for tid, points in trails.points.items():
            if len(points) > 1:
                pts = np.asarray(points, dtype=np.int32).reshape(-1, 1, 2)
                cv2.polylines(out, [pts], isClosed=False, color=id_colour(tid), thickness=2, lineType=cv2.LINE_AA)
    scale = max(0.4, min(frame.shape[:2]) / 720)
    for row in np.asarray(tracks).reshape(-1, 8):
        tid = int(row[TRACK_ID])
        colour = id_colour(tid)
        x1, y1, x2, y2 = (int(round(v)) for v in row[:4])
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, 2 if row[7] >= 0 else 1, lineType=cv2.LINE_AA)
        label = str(tid)
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        ty = max(y1, th + base)
        cv2.rectangle(out, (x1, ty - th - base), (x1 + tw + 2, ty), colour, -1)
        cv2.putText(out, label, (x1 + 1, ty - base), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return out
