"""Verified downloads of pinned URLs: streamed, size- and sha256-checked, written atomically."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

from spsr_cli.errors import ChecksumMismatchError, WeightsNotAvailableError
from spsr_cli.files import atomic_open, sha256_bytes, sha256_hasher

_CHUNK = 1 << 20


def _refuse_offline(url: str) -> None:
    """Offline mode from the environment (``SPSR_OFFLINE``, ``HF_HUB_OFFLINE``) stops every download."""
    from spsr_cli.weights.manifest import offline_requested

    why = offline_requested()
    if why is not None and not url.startswith("file:"):
        raise WeightsNotAvailableError(f"{url} is not cached and offline mode is on ({why})")


def download_verified(url: str, dest: Path, *, sha256: str, size: int | None = None, timeout: float = 30.0) -> Path:
    """Stream ``url`` to ``dest`` (atomically: a temp file, then rename), checking size and sha256.

    Raises :class:`WeightsNotAvailableError` when the URL cannot be read and
    :class:`~spsr_cli.errors.ChecksumMismatchError` when the bytes differ from the pin
    (nothing is left behind either way).
    """
    _refuse_offline(url)
    digest, received = sha256_hasher(), 0
    with atomic_open(dest, "wb") as handle:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (pinned URL, sha256-checked)
                while block := response.read(_CHUNK):
                    digest.update(block)
                    handle.write(block)
                    received += len(block)
        except (urllib.error.URLError, OSError) as err:
            raise WeightsNotAvailableError(f"could not download {url}: {err}") from None
        if size is not None and received != size:
            raise ChecksumMismatchError(f"{url}: got {received} bytes, the registry pins {size}; nothing was kept")
        if digest.hexdigest() != sha256.lower():
            raise ChecksumMismatchError(
                f"{url}: sha256 {digest.hexdigest()} differs from the registry's {sha256}; nothing was kept"
            )
    return dest


def download_bytes(
    url: str, *, sha256: str | None = None, sha256_prefix: str | None = None, timeout: float = 30.0
) -> bytes:
    """The bytes at ``url`` (kept in memory: small files only), checked against ``sha256`` and/or
    ``sha256_prefix`` when given.

    Raises :class:`WeightsNotAvailableError` when the URL cannot be read and
    :class:`~spsr_cli.errors.ChecksumMismatchError` when the bytes differ from a pin.
    """
    _refuse_offline(url)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (pinned https URL)
            data = response.read()
    except (urllib.error.URLError, OSError) as err:
        raise WeightsNotAvailableError(f"could not download {url}: {err}") from None
    actual = sha256_bytes(data)
    if sha256 and actual != sha256:
        raise ChecksumMismatchError(f"{url}: sha256 {actual} differs from the registry's {sha256}")
    if sha256_prefix and not actual.startswith(sha256_prefix):
        raise ChecksumMismatchError(f"{url}: sha256 {actual} does not start with {sha256_prefix}")
    return data


__all__ = ["download_bytes", "download_verified"]
