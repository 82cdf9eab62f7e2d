"""Downloads from the Hugging Face hub, verified by sha256.

Environment variables are read at call time (not at import time, as
``huggingface_hub.constants`` does), so ``HF_ENDPOINT``, ``HF_HOME``/``HF_HUB_CACHE``
and ``HF_HUB_OFFLINE`` set by a user or a test always apply.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from spsr_cli.errors import ChecksumMismatchError, WeightsNotAvailableError
from spsr_cli.files import sha256_file

log = logging.getLogger(__name__)
_SHA256 = re.compile(r"[0-9a-f]{64}")
_GIT_SHA1 = re.compile(r"[0-9a-f]{40}")
_HEAD_TIMEOUT_S = 10.0


class HubUnreachableError(WeightsNotAvailableError):
    """The hub could not be reached (no network, DNS failure, refused connection, timeout)."""


class UnverifiableFileError(WeightsNotAvailableError):
    """Neither the hub nor the registry gives a content hash for a file (usable only when trusted)."""


def hub_offline() -> bool:
    """Whether the environment asks for offline mode (``HF_HUB_OFFLINE`` or ``SPSR_OFFLINE``)."""
    from spsr_cli.weights.manifest import offline_requested

    return offline_requested() is not None


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "").rstrip("/") or "https://huggingface.co"


def hub_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface"
    return Path(home).expanduser() / "hub"


def cached_hub_file(*, repo_id: str, filename: str, revision: str, repo_type: str = "model") -> Path | None:
    """The cached file for that pinned revision, or None (never touches the network)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, cache_dir=hub_cache_dir(), revision=revision, repo_type=repo_type)
    return Path(found) if isinstance(found, str) else None


def _verify(path: Path, sha256: str | None, what: str) -> Path:
    if sha256 is None:
        return path
    actual = sha256_file(path)
    if actual != sha256.lower():
        real = path.resolve()
        path.unlink(missing_ok=True)
        if real != path:
            real.unlink(missing_ok=True)
        raise ChecksumMismatchError(
            f"{what}: sha256 {actual} does not match the registry's {sha256}; the file was deleted. "
            "Download it again; if it keeps failing the source or the manifest entry is wrong."
        )
    return path


@dataclass(frozen=True)
class HubFile:
    """A file fetched from the hub at a pinned revision, and how its bytes were verified.

    ``sha256``: of the bytes on disk. ``etag``: the hub's content id for that revision (an LFS
    file's sha256, or a plain git file's blob sha1), or None when it could not be learned.
    ``verified_by``: which checks passed (``"hub-etag"``, ``"pin"``); empty only when the caller
    accepted an unverifiable file.
    """

    path: Path
    sha256: str
    etag: str | None
    verified_by: tuple[str, ...]

    def to_dict(self) -> dict[str, object]:
        return {"sha256": self.sha256, "etag": self.etag, "verified_by": list(self.verified_by)}


def git_blob_sha1(path: Path, chunk: int = 1 << 20) -> str:
    """The git object id of a file's content (``sha1("blob <size>\\0" + bytes)``): the hub's etag of a non-LFS file."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode(), usedforsecurity=False)
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _etag_from_cache_path(path: Path) -> str | None:
    """huggingface_hub names each cached blob by its etag; a snapshot file links to it."""
    real = path.resolve()
    if (
        real != path
        and real.parent.name == "blobs"
        and (_SHA256.fullmatch(real.name) or _GIT_SHA1.fullmatch(real.name))
    ):
        return real.name
    return None


def _delete(path: Path) -> None:
    real = path.resolve()
    path.unlink(missing_ok=True)
    if real != path:
        real.unlink(missing_ok=True)


def _check_content(path: Path, *, etag: str | None, sha256: str | None, what: str, trust_unverified: bool) -> HubFile:
    """Verify ``path`` against the hub's etag for the revision and the registry pin; a mismatch deletes it."""
    actual = sha256_file(path)
    verified: list[str] = []
    etag = etag.lower() if etag else None
    if etag and _SHA256.fullmatch(etag):
        if actual != etag:
            _delete(path)
            raise ChecksumMismatchError(
                f"{what}: sha256 {actual} does not match the hub's {etag} for this revision; the file was deleted. "
                "Download it again; if it keeps failing the download is being corrupted on the way."
            )
        verified.append("hub-etag")
    elif etag and _GIT_SHA1.fullmatch(etag):
        blob = git_blob_sha1(path)
        if blob != etag:
            _delete(path)
            raise ChecksumMismatchError(
                f"{what}: git blob id {blob} does not match the hub's {etag} for this revision; the file was deleted. "
                "Download it again."
            )
        verified.append("hub-etag")
    if sha256 is not None:
        _verify(path, sha256, what)
        verified.append("pin")
    if not verified and not trust_unverified:
        _delete(path)
        raise UnverifiableFileError(
            f"{what}: neither the hub (etag {etag!r}) nor the registry gives a content hash to check it against; "
            "the file was deleted. Pass --trust-unverified to use it anyway."
        )
    return HubFile(path=path, sha256=actual, etag=etag, verified_by=tuple(verified))


def fetch_hub_file(
    *,
    repo_id: str,
    filename: str,
    revision: str,
    sha256: str | None,
    repo_type: str = "model",
    offline: bool | None = None,
) -> Path:
    """Return a local path to ``repo_id/filename@revision``, downloading it if needed.

    The file lands in huggingface_hub's standard cache and is checked against the hub's
    content hash for the revision (its etag) and against ``sha256`` (``None`` skips that
    pin: only for entries the manifest cannot pin). A mismatch deletes the file and raises
    :class:`ChecksumMismatchError`. With ``offline`` (or ``HF_HUB_OFFLINE=1``) only the
    cache is used. See :func:`fetch_hub_file_checked`.
    """
    return fetch_hub_file_checked(
        repo_id=repo_id,
        filename=filename,
        revision=revision,
        sha256=sha256,
        repo_type=repo_type,
        offline=offline,
        trust_unverified=True,
    ).path


def fetch_hub_file_checked(
    *,
    repo_id: str,
    filename: str,
    revision: str,
    sha256: str | None,
    repo_type: str = "model",
    offline: bool | None = None,
    trust_unverified: bool = False,
) -> HubFile:
    """Fetch ``repo_id/filename@revision`` (a 40-hex commit) and verify it.

    At a pinned commit the hub reports each file's content hash (``X-Linked-Etag``: an LFS
    file's sha256; ``ETag``: a git file's blob sha1); the bytes are checked against it and
    against ``sha256`` when given. A mismatch with either deletes the file and raises
    :class:`ChecksumMismatchError`; a file neither can verify is refused unless
    ``trust_unverified``. The hub is asked once, without retries, before any download, so an
    unreachable hub fails at once with :class:`HubUnreachableError`.
    """
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    offline = bool(offline) or hub_offline()
    what = f"{repo_type} {repo_id}@{revision[:10]} file {filename}"
    cached = cached_hub_file(repo_id=repo_id, filename=filename, revision=revision, repo_type=repo_type)
    if cached is not None:
        return _check_content(
            cached, etag=_etag_from_cache_path(cached), sha256=sha256, what=what, trust_unverified=trust_unverified
        )
    if offline:
        raise WeightsNotAvailableError(
            f"{what} is not in the local cache ({hub_cache_dir()}) and offline mode is on; "
            "run once without --offline / HF_HUB_OFFLINE / SPSR_OFFLINE to download it"
        )
    url = hf_hub_url(repo_id, filename, repo_type=repo_type, revision=revision, endpoint=hub_endpoint())
    try:
        meta = get_hf_file_metadata(url, timeout=_HEAD_TIMEOUT_S, endpoint=hub_endpoint(), retry_on_errors=False)
        path = hf_hub_download(
            repo_id,
            filename,
            revision=revision,
            repo_type=repo_type,
            cache_dir=hub_cache_dir(),
            endpoint=hub_endpoint(),
        )
    except LocalEntryNotFoundError as err:  # huggingface_hub's own HEAD failed after ours succeeded
        raise WeightsNotAvailableError(f"downloading {what} from {hub_endpoint()} failed: {err}") from None
    except (EntryNotFoundError, RepositoryNotFoundError) as err:
        raise WeightsNotAvailableError(f"the hub at {hub_endpoint()} has no {what} ({type(err).__name__})") from None
    except HfHubHTTPError as err:
        raise WeightsNotAvailableError(f"downloading {what} from {hub_endpoint()} failed: {err}") from None
    except (OSError, _transport_errors()) as err:
        raise HubUnreachableError(
            f"could not reach the hub at {hub_endpoint()} to download {what}, and it is not cached ({err}); "
            "check the network or HF_ENDPOINT"
        ) from None
    if meta.commit_hash and meta.commit_hash != revision:
        raise WeightsNotAvailableError(f"the hub answered for commit {meta.commit_hash} when asked for {what}")
    return _check_content(Path(path), etag=meta.etag, sha256=sha256, what=what, trust_unverified=trust_unverified)


def _transport_errors() -> type[Exception] | tuple[type[Exception], ...]:
    """The HTTP client's network errors (huggingface_hub's client library; none if it cannot be found)."""
    try:
        import httpx2

        return httpx2.TransportError
    except ImportError:
        return ()
