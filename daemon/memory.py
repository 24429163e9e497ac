"""The session memory budget: parsing ``--memory-budget`` and sizing it automatically."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import torch

log = logging.getLogger(__name__)

UNITS = {"": 1, "K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30, "T": 2 ** 40}
AUTO_HOST_SHARE = 0.5  # of the memory available when the models are loaded (the rest for everything else)
AUTO_DEVICE_SHARE = 0.6  # of the device memory free after loading (the rest for the models' working memory)
UNLIMITED_V1 = 2 ** 60  # cgroup v1 reports "no limit" as a number near 2**63


def parse_budget(text: str, what: str = "memory budget") -> int | None:
    """``auto`` -> None (sized at start), ``none`` or ``0`` -> 0 (no budget), else bytes.

    Sizes: ``12G``, ``512MiB``, ``1e9``. ``what`` names the setting in messages.
    """
    value = text.strip()
    if value.lower() == "auto":
        return None
    if value.lower() in ("none", "0"):
        return 0
    m = re.fullmatch(r"(\d+(?:\.\d+)?(?:[eE]\d+)?)\s*([KMGTkmgt]?)(?:i?B)?", value)
    if not m:
        raise ValueError(f"{what} must be auto, none or a size like 12G or 512M, got {text!r}")
    size = int(float(m.group(1)) * UNITS[m.group(2).upper()])
    if size <= 0:
        raise ValueError(f"{what} must be positive, got {text!r}")
    return size


def available_host_bytes() -> int:
    """MemAvailable from /proc/meminfo, else total physical memory."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def cgroup_memory_room(root: Path = Path("/sys/fs/cgroup"), membership: str | None = None) -> int | None:
    """What this process's cgroup still lets it allocate (limit - usage), None when it sets no limit.

    systemd's ``MemoryMax=`` and container limits live here, not in /proc/meminfo. ``membership`` is
    the text of /proc/self/cgroup; each controller's directory is tried at the listed path and at
    the mount's root (inside a container the mount is usually the cgroup itself).
    """
    if membership is None:
        try:
            membership = Path("/proc/self/cgroup").read_text()
        except OSError:
            return None
    for line in membership.splitlines():
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        _id, controllers, path = fields
        if controllers == "":  # cgroup v2
            candidates = [(root / path.lstrip("/"), "memory.max", "memory.current")]
            candidates.append((root, "memory.max", "memory.current"))
        elif "memory" in controllers.split(","):  # cgroup v1
            base = root / "memory"
            candidates = [(base / path.lstrip("/"), "memory.limit_in_bytes", "memory.usage_in_bytes"),
                          (base, "memory.limit_in_bytes", "memory.usage_in_bytes")]
        else:
            continue
        for directory, limit_name, usage_name in candidates:
            try:
                limit_text = (directory / limit_name).read_text().strip()
                usage = int((directory / usage_name).read_text())
            except (OSError, ValueError):
                continue
            if limit_text == "max" or int(limit_text) >= UNLIMITED_V1:
                return None
            return max(0, int(limit_text) - usage)
    return None


def auto_budget(device: torch.device) -> tuple[int, str]:
    """A budget for the sessions' frames on ``device`` once the models are loaded, and how it was sized."""
    if device.type == "cuda":
        try:
            free, _total = torch.cuda.mem_get_info(device)
            return int(free * AUTO_DEVICE_SHARE), f"{AUTO_DEVICE_SHARE:.0%} of the free memory of {device}"
        except (RuntimeError, AssertionError) as e:  # fail soft: size by the host instead
            log.warning("cannot read the free memory of %s (%s); sizing the budget by the host", device, e)
    room, where = available_host_bytes(), "the available memory"
    in_cgroup = cgroup_memory_room()
    if in_cgroup is not None and in_cgroup < room:
        room, where = in_cgroup, "the room left under this service's memory limit (cgroup)"
    return int(room * AUTO_HOST_SHARE), f"{AUTO_HOST_SHARE:.0%} of {where}"
