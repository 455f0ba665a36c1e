"""Describe the machine a benchmark ran on (every result JSON names it)."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
from typing import Any


def describe() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gib = None
    try:
        with open("/proc/meminfo") as fh:
            mem_gib = round(int(fh.readline().split()[1]) / 1024 / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": mem_gib,
        "load_average_1m": round(os.getloadavg()[0], 2),  # other work sharing the machine
    }
    for mod in ("torch", "transformers"):
        with contextlib.suppress(ImportError):
            info[mod] = __import__(mod).__version__
    with contextlib.suppress(ImportError):
        import torch

        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    try:
        info["docker"] = (
            subprocess.run(
                ["docker", "version", "--format", "{{.Server.Version}}"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.TimeoutExpired):
        info["docker"] = None
    return info
