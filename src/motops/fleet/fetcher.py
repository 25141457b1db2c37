"""Bounded reads from the fleet bucket: a TUF fetcher over boto3, and ranged, resumable target downloads.

Every GET asks S3 for a byte range that ends at the length the caller may accept (TUF's
``max_length`` for metadata, the signed ``length`` of a target), so a server that holds
300 MiB where 12 MB are declared sends at most the declared bytes; an object whose total size
(``Content-Range``) differs from a target's signed length is refused before its body is read.

Bodies are read with ``read1`` (one socket read at a time, each bounded by ``fleet.timeout_s``)
and the :class:`Deadline` is checked after every read, so a server that trickles one byte per
second cannot keep a sync past its deadline by more than one read timeout.

Metadata bytes are checked for the channel they were signed for (``x-motops-channel`` in the
signed part, see :mod:`motops.fleet.repository`) before python-tuf sees them: metadata of another
channel is refused before it could be verified and stored as trusted, so a cross-channel
replay cannot leave a device with higher version numbers than its real channel's.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Final

from tuf.api import exceptions as tuf_exc
from tuf.ngclient import FetcherInterface

from motops.fleet.store import CHANNEL_FIELD, FleetError, describe_s3_error, is_missing

_READ: Final = 1 << 16


class SyncDeadlineError(FleetError):
    """A sync ran out of its ``fleet.sync_deadline_s``; it stopped and released the lock."""


class Deadline:
    """A monotonic deadline: ``check()`` raises :class:`SyncDeadlineError` once ``seconds`` have passed."""

    def __init__(self, seconds: float) -> None:
        self.seconds = float(seconds)
        self.start = time.monotonic()
        self.end = self.start + self.seconds

    def remaining(self) -> float:
        """Seconds left (negative once passed)."""
        return self.end - time.monotonic()

    def check(self, what: str) -> None:
        """Raise when the deadline has passed, naming what was being done."""
        if time.monotonic() > self.end:
            raise SyncDeadlineError(
                f"sync gave up after {time.monotonic() - self.start:.1f} s (fleet.sync_deadline_s={self.seconds:g}) "
                f"while {what}; the lock is released and the next sync resumes"
            )


def _is_aws_error(exc: BaseException) -> bool:
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    return isinstance(exc, BotoCoreError | ClientError | Boto3Error)


class S3Reader:
    """Ranged GETs of one bucket with a deadline; counts the body bytes it receives.

    Args:
        client: A boto3 S3 client (its read timeout bounds one socket read).
        params: The ``fleet`` params (bucket, endpoint, for messages).
        deadline: The sync's deadline.
    """

    def __init__(self, client: Any, params: Any, deadline: Deadline) -> None:
        self.client = client
        self.params = params
        self.deadline = deadline
        self.received = 0

    def url(self, key: str) -> str:
        """``s3://BUCKET/KEY``."""
        return f"s3://{self.params.bucket}/{key}"

    def get_range(self, key: str, start: int, end: int | None) -> tuple[int | None, bool, Any]:
        """GET bytes ``start..end`` (inclusive; ``None``: to the end) of ``key``.

        Returns:
            ``(total, ranged, chunks)``: the object's total size when the server says it,
            whether the answer is the asked range (206) rather than the whole object, and an
            iterable of body chunks (with ``close()``) that checks the deadline after every socket read.

        Raises:
            FileNotFoundError: No such key.
            FleetError: Any other S3 error (one line naming the object).
            SyncDeadlineError: The deadline passed.
        """
        self.deadline.check(f"requesting {self.url(key)}")
        kwargs: dict[str, Any] = {"Bucket": self.params.bucket, "Key": key}
        if start or end is not None:
            kwargs["Range"] = f"bytes={start}-{'' if end is None else end}"
        try:
            response = self.client.get_object(**kwargs)
        except Exception as exc:
            if not _is_aws_error(exc):
                raise
            if is_missing(exc):
                raise FileNotFoundError(self.url(key)) from None
            code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
            if code == "InvalidRange":  # the object ends before `start` (an empty object, a finished part)
                return start, True, ()
            raise FleetError(f"reading {describe_s3_error(exc, self.params, key)}") from exc
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        ranged = status == 206
        total = response.get("ContentLength")
        content_range = response.get("ContentRange") or ""
        if ranged and "/" in content_range and content_range.rsplit("/", 1)[1].isdigit():
            total = int(content_range.rsplit("/", 1)[1])
        elif ranged:
            total = None
        return total, ranged, self._chunks(response["Body"], key)

    def _chunks(self, body: Any, key: str) -> _Chunks:
        return _Chunks(self, body, key)


class _Chunks:
    """Body chunks, one socket read each (``read1``), the deadline checked after each; ``close()`` drops the rest."""

    def __init__(self, reader: S3Reader, body: Any, key: str) -> None:
        self.reader, self.body, self.key = reader, body, key
        raw = getattr(body, "_raw_stream", None)
        self._read = raw.read1 if raw is not None and hasattr(raw, "read1") else body.read

    def __iter__(self) -> Iterator[bytes]:
        try:
            while True:
                try:
                    chunk = self._read(_READ)
                except Exception as exc:  # socket timeout, reset: one line naming the object
                    raise FleetError(
                        f"reading {self.reader.url(self.key)}: {type(exc).__name__}: {exc} (the next sync resumes)"
                    ) from exc
                if not chunk:
                    return
                self.reader.received += len(chunk)
                yield chunk
                self.reader.deadline.check(f"downloading {self.reader.url(self.key)}")
        finally:
            self.close()

    def close(self) -> None:
        """Close the response (an unread rest is not downloaded)."""
        with contextlib.suppress(Exception):
            self.body.close()


class S3Fetcher(FetcherInterface):
    """python-tuf's fetcher over :class:`S3Reader`: ``s3://BUCKET/KEY`` URLs, ranged to ``max_length``.

    Args:
        reader: The ranged reader (shared with the target downloads, so bytes are counted once).
        channel: The channel this device follows; metadata signed for another is refused.
    """

    def __init__(self, reader: S3Reader, channel: str) -> None:
        self.reader = reader
        self.channel = channel

    def _key(self, url: str) -> str:
        prefix = f"s3://{self.reader.params.bucket}/"
        if not url.startswith(prefix):
            raise tuf_exc.DownloadError(f"{url}: not in the fleet bucket {prefix}")
        return url[len(prefix):]

    def _fetch(self, url: str) -> Iterator[bytes]:
        return self._bounded(url, None)

    def _bounded(self, url: str, max_length: int | None) -> Iterator[bytes]:
        try:
            # One byte more than allowed, so python-tuf sees the overflow and refuses.
            _, _, chunks = self.reader.get_range(self._key(url), 0, None if max_length is None else max_length)
        except FileNotFoundError:
            raise tuf_exc.DownloadHTTPError(f"{url}: not found", 404) from None
        return iter(chunks)

    @contextlib.contextmanager
    def download_file(self, url: str, max_length: int) -> Iterator[IO]:
        """As python-tuf's, but the request itself asks for at most ``max_length + 1`` bytes."""
        received = 0
        with tempfile.TemporaryFile() as temp_file:
            for chunk in self._bounded(url, max_length):
                received += len(chunk)
                if received > max_length:
                    raise tuf_exc.DownloadLengthMismatchError(
                        f"{url}: more than {max_length} bytes, the most this metadata may have; refused"
                    )
                temp_file.write(chunk)
            temp_file.seek(0)
            yield temp_file

    def download_bytes(self, url: str, max_length: int) -> bytes:
        """Bounded download; metadata signed for another channel is refused before python-tuf stores it."""
        data = super().download_bytes(url, max_length)
        found = _signed_channel(data)
        if found != self.channel:
            raise tuf_exc.RepositoryError(
                f"{url}: signed for channel {found!r}, this device follows {self.channel!r} "
                "(metadata copied from another channel); refused"
            )
        return data


def _signed_channel(data: bytes) -> str | None:
    try:
        signed = json.loads(data)["signed"]
        return signed.get(CHANNEL_FIELD) if isinstance(signed, dict) else None
    except (ValueError, KeyError, TypeError):
        return None  # not JSON metadata: python-tuf refuses it with its own message


def download_target(reader: S3Reader, key: str, part: Path, length: int, sha256: str) -> bool:
    """Bring ``part`` to the ``length`` bytes of ``key`` (resuming a prefix by byte range); True when it matches.

    Never asks for a byte past ``length``; an object of another total size is refused before its
    body is read. A resumed prefix that turns out wrong is fetched once more from the start. A
    file that does not match is removed.

    Raises:
        VerificationError: The object is missing or its size differs from the signed length.
        FleetError: S3 failed, or the deadline passed (``part`` is kept for the next sync).
        OSError: Writing failed (disk full, read-only).
    """
    from motops.fleet.store import VerificationError

    name = part.name.removesuffix(".part")
    if length == 0:
        part.write_bytes(b"")
        return hashlib.sha256().hexdigest() == sha256
    for attempt in range(2):
        offset = part.stat().st_size if part.is_file() and not part.is_symlink() else 0
        if offset > length or attempt:
            offset = 0
        digest = hashlib.sha256()
        if offset:
            with open(part, "rb") as fh:
                while block := fh.read(1 << 20):
                    digest.update(block)
        if offset < length:
            try:
                total, ranged, chunks = reader.get_range(key, offset, length - 1)
            except FileNotFoundError:
                raise VerificationError(
                    f"{reader.url(key)}: missing from the bucket, though the signed targets list it", files=[name]
                ) from None
            if total is not None and total != length:
                if hasattr(chunks, "close"):
                    chunks.close()
                part.unlink(missing_ok=True)
                raise VerificationError(
                    f"{reader.url(key)}: the object holds {total} bytes, the signed targets metadata says {length}; "
                    "refused before reading it",
                    files=[name],
                )
            if offset and not ranged:
                digest, offset = hashlib.sha256(), 0
            flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if offset else os.O_TRUNC)
            with os.fdopen(os.open(part, flags, 0o644), "wb") as fh:
                written = offset
                for chunk in chunks:
                    chunk = chunk[: length - written]  # a server ignoring the range: never past the length
                    digest.update(chunk)
                    fh.write(chunk)
                    written += len(chunk)
                    if written >= length:
                        break
                if hasattr(chunks, "close"):
                    chunks.close()
                fh.flush()
                os.fsync(fh.fileno())
        if part.stat().st_size == length and digest.hexdigest() == sha256:
            return True
        if not offset:
            break
    part.unlink(missing_ok=True)
    return False
