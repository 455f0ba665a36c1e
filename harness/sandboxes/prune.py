"""`harness sandbox prune`: remove what killed runs left behind, and nothing a live run uses.

On one Docker engine shared by several hosts or CI containers, an owner is judged by what can
be known (harness.sandboxes.owner), never by its hostname:
- owner provably alive (same kernel and pid namespace, same process start time): kept;
- owner provably dead (gone, or its pid now names another process): removed;
- owner unknown (another host or namespace): a running container is kept, because its agent
  holds a lease connection to the owner and exits, taking the container with it, the moment
  the owner dies. A created or exited container, or an unused fork image, is removed once
  older than `grace_s` by the engine's own clock: a live owner starts a container it created,
  and removes one that exited or a fork image it no longer uses, within seconds.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from harness.sandboxes.docker import (
    LABEL,
    LABEL_IMAGE,
    LABEL_OWNER_ID,
    _remove_container,
    _remove_image,
)
from harness.sandboxes.owner import Liveness, ProcessId, liveness
from harness.tempdirs import prune_tempdirs, temp_roots

GRACE_S = 600.0
_LIVE_STATES = ("running", "paused", "restarting", "removing")
_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?$")


def prune(
    client: Any,
    *,
    everything: bool = False,
    images: bool = False,
    label: str | None = None,
    grace_s: float = GRACE_S,
) -> list[str]:
    """Remove leftover sandbox containers and fork images whose owner is gone.

    `everything` removes them even when their owner still runs; `images` also removes the
    cached snapshot images (they are rebuilt on demand). The base image is never touched.
    `label` ("key=value") narrows it to sandboxes that also carry that label.
    Returns what was removed, as "container NAME" / "image ID (kind)" lines.
    """
    removed: list[str] = []
    labels = [LABEL, label] if label else [LABEL]
    now = engine_time(str(client.info().get("SystemTime") or ""))
    # Other processes add and remove containers meanwhile: one that is gone is skipped.
    found = client.containers.list(all=True, filters={"label": labels}, ignore_removed=True)
    for container in found:
        if everything or _container_stale(container, now, grace_s):
            _remove_container(container)
            removed.append(f"container {container.name}")
    # Summaries (one API call each), not models: those inspect every item, racing removals.
    in_use = {str(c.get("ImageID") or "") for c in client.api.containers(all=True)}
    # Newest first: a fork of a fork is built on its parent's image.
    summaries = client.api.images(filters={"label": labels})
    for image in sorted(summaries, key=lambda i: int(i.get("Created") or 0), reverse=True):
        image_id, image_labels = str(image["Id"]), dict(image.get("Labels") or {})
        kind = image_labels.get(LABEL_IMAGE, "")
        stale_fork = kind == "fork" and (
            everything
            or (image_id not in in_use and _image_stale(image_labels, image, now, grace_s))
        )
        wanted = stale_fork or (images and kind.startswith("snapshot-"))
        if wanted and _remove_image(client, image_id):
            removed.append(f"image {image_id.removeprefix('sha256:')[:12]} ({kind})")
    return removed


def prune_host(cache_dir: Path, tmp_dirs: Iterable[Path]) -> list[str]:
    """Remove temp directories of harness processes that are gone (kill -9 included)."""
    return [f"directory {path}" for path in prune_tempdirs(temp_roots(cache_dir, tmp_dirs))]


def owner_liveness(labels: dict[str, str]) -> Liveness:
    return liveness(ProcessId.parse(labels.get(LABEL_OWNER_ID, "")))


def engine_time(text: str) -> float | None:
    """Seconds since the epoch of a Docker timestamp (nanoseconds, Z or an offset)."""
    match = _TIME.match(text.strip())
    if match is None or match[1].startswith("0001-"):  # Docker's "never"
        return None
    fraction = (match[2] or "")[:6].ljust(6, "0")
    zone = match[3] if match[3] and match[3] != "Z" else "+00:00"
    return datetime.fromisoformat(f"{match[1]}.{fraction}{zone}").timestamp()


def _container_stale(container: Any, now: float | None, grace_s: float) -> bool:
    verdict = owner_liveness(container.labels)
    if verdict != "unknown":
        return verdict == "dead"
    if container.status in _LIVE_STATES:
        return False  # its agent's lease ends it when its owner dies
    state = container.attrs.get("State") or {}
    since = engine_time(str(state.get("FinishedAt") or "")) or engine_time(
        str(container.attrs.get("Created") or "")
    )
    return _older(since, now, grace_s)


def _image_stale(
    labels: dict[str, str], summary: dict[str, Any], now: float | None, grace_s: float
) -> bool:
    verdict = owner_liveness(labels)
    if verdict != "unknown":
        return verdict == "dead"
    created = summary.get("Created")  # seconds since the epoch, by the engine's clock
    return _older(float(created) if created else None, now, grace_s)


def _older(since: float | None, now: float | None, grace_s: float) -> bool:
    if since is None or now is None:
        return grace_s <= 0  # no clock to judge by: only when asked to ignore age
    return now - since >= grace_s
