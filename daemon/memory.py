"""The session memory budget: parsing ``--memory-budget`` and sizing it automatically."""

from __future__ import annotations

import logging
import os
import re

import torch

log = logging.getLogger("mpd-daemon")

UNITS = {"": 1, "K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30, "T": 2 ** 40}
AUTO_HOST_SHARE = 0.5  # of the memory available when the models are loaded (the rest for everything else)
AUTO_DEVICE_SHARE = 0.6  # of the device memory free after loading (the rest for the models' working memory)


def parse_budget(text: str) -> int | None:
    """``auto`` -> None (sized at start), ``none`` or ``0`` -> 0 (no budget), else bytes: ``12G``, ``512MiB``, ``1e9``."""
    value = text.strip()
    if value.lower() == "auto":
        return None
    if value.lower() in ("none", "0"):
        return 0
    m = re.fullmatch(r"(\d+(?:\.\d+)?(?:[eE]\d+)?)\s*([KMGTkmgt]?)(?:i?B)?", value)
    if not m:
        raise ValueError(f"memory budget must be auto, none or a size like 12G or 512M, got {text!r}")
    size = int(float(m.group(1)) * UNITS[m.group(2).upper()])
    if size <= 0:
        raise ValueError(f"memory budget must be positive, got {text!r}")
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


def auto_budget(device: torch.device) -> tuple[int, str]:
    """A budget for the sessions' frames on ``device`` once the models are loaded, and how it was sized."""
    if device.type == "cuda":
        try:
            free, _total = torch.cuda.mem_get_info(device)
            return int(free * AUTO_DEVICE_SHARE), f"{AUTO_DEVICE_SHARE:.0%} of the free memory of {device}"
        except (RuntimeError, AssertionError) as e:  # fail soft: size by the host instead
            log.warning("cannot read the free memory of %s (%s); sizing the budget by the host", device, e)
    return int(available_host_bytes() * AUTO_HOST_SHARE), f"{AUTO_HOST_SHARE:.0%} of the available memory"
