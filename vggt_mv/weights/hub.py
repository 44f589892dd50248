"""Weights by name (DESIGN §10): local paths, ``hf://`` URIs and short names, via ``huggingface_hub``.

A checkpoint argument is, in this order: an existing local path; ``hf://[datasets/]OWNER/REPO[@REV]/PATH``
(huggingface_hub's own syntax; PATH may contain ``/``); or a short name of :data:`SHORT_NAMES`.
Downloads go through ``hf_hub_download`` (its cache under ``HF_HOME``, resume, tokens, progress);
``HF_HUB_OFFLINE=1`` uses the cache only. The environment is read at call time (huggingface_hub
reads it once at import, and gradio imports it early), so ``cache_dir`` / ``local_files_only`` are
passed explicitly. After download the file loads like any local file.
"""
from __future__ import annotations

import logging
import os
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger("vggt_mv.weights")

__all__ = ["HubFile", "SHORT_NAMES", "parse_weights_ref", "resolve_weights", "implied_preset",
           "hub_cache_dir", "hub_offline", "human_size", "weights_table", "describe_weights",
           "weights_choices"]


@dataclass(frozen=True)
class HubFile:
    """One file of a Hub repository."""

    repo_id: str
    filename: str
    repo_type: str = "model"  # "model" | "dataset" | "space"
    revision: str | None = None
    preset: str | None = None  # preset a short name implies (when neither --preset nor --config)

    @property
    def uri(self) -> str:
        kind = "" if self.repo_type == "model" else f"{self.repo_type}s/"
        rev = f"@{urllib.parse.quote(self.revision, safe='')}" if self.revision else ""
        return f"hf://{kind}{self.repo_id}{rev}/{self.filename}"

    def download_command(self) -> str:
        """The ``hf download`` command (huggingface_hub 1.x/2.x CLI) that puts this file in the cache."""
        cmd = f"hf download {self.repo_id} {self.filename}"
        if self.repo_type != "model":
            cmd += f" --repo-type {self.repo_type}"
        if self.revision:
            cmd += f" --revision {self.revision}"
        return cmd


#: short name -> file (sizes are not hard-coded: `vggt-mv weights list` asks the Hub or the cache)
SHORT_NAMES: dict[str, HubFile] = {
    "vggt-1b": HubFile("facebook/VGGT-1B", "model.safetensors", preset="vggt"),
    "pi3": HubFile("yyfz233/Pi3", "model.safetensors", preset="vggt_mv"),
    "page4d-mask": HubFile("zhouk777/PAGE4D", "checkpoint_mask.pt", "dataset", preset="page4d_mask"),
    "page4d-nomask": HubFile("zhouk777/PAGE4D", "checkpoint_nomask.pt", "dataset", preset="page4d"),
}

_HF_URI = re.compile(r"^hf://(?:(datasets|spaces|models)/)?([^/@]+/[^/@]+)(?:@([^/]+))?/(.+)$")


def parse_weights_ref(ref: str | os.PathLike | None) -> HubFile | None:
    """The Hub file ``ref`` names, or None for a local path (an existing path always wins)."""
    if ref is None:
        return None
    text = os.fspath(ref)
    if Path(text).expanduser().exists():
        return None
    if text in SHORT_NAMES:
        return SHORT_NAMES[text]
    if text.startswith("hf://"):
        m = _HF_URI.match(text)
        if not m:
            raise ValueError(f"{text!r} is not a Hub file URI; use hf://[datasets/]OWNER/REPO[@REVISION]/PATH")
        kind, repo_id, rev, filename = m.groups()
        repo_type = {"datasets": "dataset", "spaces": "space"}.get(kind or "", "model")
        return HubFile(repo_id, filename, repo_type, urllib.parse.unquote(rev) if rev else None)
    return None


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", os.environ.get("TRANSFORMERS_OFFLINE", "")).strip().lower() in (
        "1", "true", "yes", "on")


def hub_cache_dir() -> Path:
    """huggingface_hub's cache folder from the environment *now* (``HF_HUB_CACHE`` or ``HF_HOME/hub``)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def human_size(size: int | None) -> str:
    if size is None:
        return "size unknown"
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return ""


def cached_path(hub: HubFile) -> Path | None:
    """The cached copy of ``hub`` (no network), or None."""
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(hub.repo_id, hub.filename, cache_dir=str(hub_cache_dir()),
                                 revision=hub.revision, repo_type=hub.repo_type)
    return Path(hit) if isinstance(hit, str) else None


def _not_available(hub: HubFile, role: str, ref: str, why: str) -> ValueError:
    return ValueError(f"{role} {ref}: {hub.repo_id}/{hub.filename} is not in the Hugging Face cache "
                      f"{hub_cache_dir()} and {why}; download it with `{hub.download_command()}` "
                      "(or pass a local file path)")


def resolve_weights(ref: str | os.PathLike | None, role: str = "checkpoint",
                    tqdm_class: Any = None, announce: Callable[[str], None] | None = None) -> Path | None:
    """A local path for ``ref`` (None stays None): local as is, Hub files from the cache or downloaded.

    Before a download, ``announce`` (default: the log) is told what, how big and where. Under an
    initialised ``torch.distributed`` group rank 0 downloads and the others wait, then read the cache.
    A missing local path or an unavailable Hub file raises a one-line ValueError.
    """
    if ref is None or ref == "":
        return None
    text = os.fspath(ref)
    hub = parse_weights_ref(text)
    if hub is None:
        path = Path(text).expanduser()
        if not path.exists():
            names = ", ".join(SHORT_NAMES)
            raise FileNotFoundError(f"{role} file not found: {text} (give a local path, hf://OWNER/REPO/FILE, "
                                    f"or one of {names})")
        return path
    import torch.distributed as dist

    distributed = dist.is_available() and dist.is_initialized()
    if distributed and dist.get_rank() != 0:
        dist.barrier()  # rank 0 downloads first
        return _fetch(hub, role, text, tqdm_class, announce, local_only=True)
    try:
        return _fetch(hub, role, text, tqdm_class, announce, local_only=hub_offline())
    finally:
        if distributed:
            dist.barrier()


def _fetch(hub: HubFile, role: str, ref: str, tqdm_class: Any, announce: Callable[[str], None] | None,
           local_only: bool) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, HfHubHTTPError,
                                        LocalEntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    cached = cached_path(hub)
    if cached is not None:
        log.info("%s %s: using the cached %s", role, ref, cached)
        return cached
    if local_only:
        raise _not_available(hub, role, ref, "downloads are off (HF_HUB_OFFLINE=1)")
    kw = dict(repo_id=hub.repo_id, filename=hub.filename, repo_type=hub.repo_type, revision=hub.revision,
              cache_dir=str(hub_cache_dir()))
    try:
        info = hf_hub_download(**kw, dry_run=True)
        (announce or log.info)(f"{role} {ref}: downloading {hub.uri} ({human_size(info.file_size)}) into "
                               f"{hub_cache_dir()}")
        return Path(hf_hub_download(**kw, tqdm_class=tqdm_class))
    except LocalEntryNotFoundError as e:  # before EntryNotFoundError: it is a subclass
        raise _not_available(hub, role, ref, f"the Hub cannot be reached ({type(e).__name__})") from None
    except GatedRepoError:
        raise ValueError(f"{role} {ref}: {hub.repo_id} is gated; accept its terms on huggingface.co and log in "
                         "with `hf auth login` (or set HF_TOKEN)") from None
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as e:
        raise ValueError(f"{role} {ref}: {type(e).__name__.replace('Error', '')} on the Hub "
                         f"({hub.uri}); check the name") from None
    except (HfHubHTTPError, OSError) as e:
        raise _not_available(hub, role, ref, f"the Hub cannot be reached ({type(e).__name__})") from None


def implied_preset(checkpoint: str | os.PathLike | None, pi3: str | os.PathLike | None) -> str | None:
    """The preset short names imply: ``vggt-1b`` -> vggt, ``page4d-mask`` -> page4d_mask,
    ``page4d-nomask`` -> page4d; with Pi3 weights the preset is ``vggt_mv``; None otherwise."""
    if pi3:
        return "vggt_mv"
    if checkpoint is not None and os.fspath(checkpoint) in SHORT_NAMES and parse_weights_ref(checkpoint):
        return SHORT_NAMES[os.fspath(checkpoint)].preset
    return None


def remote_size(hub: HubFile, timeout: float = 5.0) -> int | None:
    """Size of ``hub`` as the Hub reports it (one HEAD request, no retries), or None when unreachable."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    try:
        url = hf_hub_url(hub.repo_id, hub.filename, repo_type=hub.repo_type, revision=hub.revision)
        return get_hf_file_metadata(url, timeout=timeout).size
    except Exception as e:  # noqa: BLE001 - sizes are informative; the download itself reports errors
        log.debug("size of %s unknown: %s", hub.uri, e)
        return None


def weights_table(remote: bool | None = None) -> list[dict[str, Any]]:
    """One row per short name: name, uri, size (bytes or None), cached path (or None).

    ``remote`` (default: unless HF_HUB_OFFLINE) asks the Hub for sizes of files not in the cache.
    """
    remote = (not hub_offline()) if remote is None else remote
    rows = []
    for name, hub in SHORT_NAMES.items():
        cached = cached_path(hub)
        size = cached.stat().st_size if cached is not None else (remote_size(hub) if remote else None)
        if cached is None and size is None:
            remote = False  # the Hub did not answer: do not wait for it once per name
        rows.append({"name": name, "uri": hub.uri, "preset": hub.preset, "size": size,
                     "cached": str(cached) if cached else None})
    return rows


def describe_weights(ref: str | os.PathLike | None, remote: bool | None = None) -> str:
    """One line on where ``ref`` would load from: local file, cached Hub file, or a download and its size.

    ``remote`` (default: unless HF_HUB_OFFLINE) asks the Hub for the size of a file not yet cached.
    Never raises for an unavailable file: the line says so and how to get it.
    """
    if not ref:
        return ""
    text = os.fspath(ref)
    try:
        hub = parse_weights_ref(text)
    except ValueError as e:
        return str(e)
    if hub is None:
        path = Path(text).expanduser()
        return f"local file, {human_size(path.stat().st_size)}" if path.is_file() else f"not found: {text}"
    cached = cached_path(hub)
    if cached is not None:
        return f"{hub.uri}: cached ({human_size(cached.stat().st_size)}) in {hub_cache_dir()}"
    remote = (not hub_offline()) if remote is None else remote
    if not remote:
        return f"{hub.uri}: not cached and HF_HUB_OFFLINE=1; fetch it with `{hub.download_command()}`"
    size = remote_size(hub)
    if size is None:
        return f"{hub.uri}: not cached and the Hub did not answer; fetch it with `{hub.download_command()}`"
    return f"{hub.uri}: will download {human_size(size)} into {hub_cache_dir()} on the first run"


def weights_choices(role: str = "checkpoint") -> list[tuple[str, str]]:
    """``(label, value)`` pairs of the short names for ``role`` ("checkpoint" | "pi3"), no network:
    labels say "cached" or "downloads on first run"."""
    names = [n for n in SHORT_NAMES if (n == "pi3") == (role == "pi3")]
    return [(f"{n} ({'cached' if cached_path(SHORT_NAMES[n]) else 'downloads on first run'})", n) for n in names]
