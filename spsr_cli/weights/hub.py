"""Downloads from the Hugging Face hub, verified by sha256.

Environment variables are read at call time (not at import time, as
``huggingface_hub.constants`` does), so ``HF_ENDPOINT``, ``HF_HOME``/``HF_HUB_CACHE``
and ``HF_HUB_OFFLINE`` set by a user or a test always apply.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from spsr_cli.errors import ChecksumMismatchError, WeightsNotAvailableError

log = logging.getLogger(__name__)
_TRUE = {"1", "true", "yes", "on"}


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


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

    found = try_to_load_from_cache(
        repo_id, filename, cache_dir=hub_cache_dir(), revision=revision, repo_type=repo_type
    )
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


def fetch_hub_file(
    *, repo_id: str, filename: str, revision: str, sha256: str | None, repo_type: str = "model", offline: bool | None = None
) -> Path:
    """Return a local path to ``repo_id/filename@revision``, downloading it if needed.

    The file lands in huggingface_hub's standard cache and is checked against ``sha256``
    (``None`` skips the check: only for entries the manifest cannot pin). A mismatch
    deletes the file and raises :class:`ChecksumMismatchError`. With ``offline`` (or
    ``HF_HUB_OFFLINE=1``) only the cache is used.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    offline = hub_offline() if offline is None else offline
    what = f"{repo_type} {repo_id}@{revision[:10]} file {filename}"
    try:
        path = hf_hub_download(
            repo_id, filename, revision=revision, repo_type=repo_type, cache_dir=hub_cache_dir(),
            endpoint=hub_endpoint(), local_files_only=offline,
        )
    except LocalEntryNotFoundError:
        if offline:
            raise WeightsNotAvailableError(
                f"{what} is not in the local cache ({hub_cache_dir()}) and offline mode is on; "
                "run once without --offline / HF_HUB_OFFLINE to download it"
            ) from None
        raise WeightsNotAvailableError(
            f"could not reach the hub at {hub_endpoint()} to download {what}, and it is not cached; "
            "check the network or HF_ENDPOINT"
        ) from None
    except (EntryNotFoundError, RepositoryNotFoundError) as err:
        raise WeightsNotAvailableError(f"the hub at {hub_endpoint()} has no {what} ({type(err).__name__})") from None
    except HfHubHTTPError as err:
        raise WeightsNotAvailableError(f"downloading {what} from {hub_endpoint()} failed: {err}") from None
    return _verify(Path(path), sha256, what)
