"""Named exceptions. Each message says what was wrong and how to fix it.

The CLI turns any :class:`SPSRError` into a red one-line message and a non-zero
exit code; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class SPSRError(Exception):
    """Base class for every error the tool reports to users."""


class CheckpointMismatchError(SPSRError):
    """A checkpoint's keys or shapes do not match the architecture (never half-loaded)."""


class WeightsNotAvailableError(SPSRError):
    """Weights are known but cannot be obtained (offline without cache, no default model, ...)."""


class ChecksumMismatchError(SPSRError):
    """A downloaded or cached file's sha256 differs from the manifest."""


class CacheNotWritableError(SPSRError):
    """``$SPSR_HOME`` (downloads, conversions, the local registry) is a file or cannot be written."""


class ImageError(SPSRError):
    """An image could not be read or written (unsupported format, corrupt file, ...)."""


class VideoError(SPSRError):
    """A video could not be read or written (no PyAV, corrupt or truncated file, no video stream, ...)."""


class UsageError(SPSRError):
    """Invalid combination of options or paths given by the user (exit code 2)."""


class UnknownModelError(UsageError):
    """A model name or path names nothing usable: not in the registry, not an existing file,
    or an invalid name (a usage error: exit code 2)."""


class NameTakenError(UsageError):
    """A name to register weights under is taken already (a released model, or a local one
    without ``--force``): a usage error, exit code 2."""
