"""What every benchmark writes beside its rows: the machine it ran on, and the JSON and table files."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import jax


def machine(date_format: str = "%Y-%m-%d") -> dict:
    """The backend, device, CPU count, platform and jax version, and the date (UTC) in ``date_format``."""
    return {
        "backend": jax.default_backend(),
        "device_kind": jax.devices()[0].device_kind,
        "devices": len(jax.devices()),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "jax": jax.__version__,
        "date": time.strftime(date_format, time.gmtime()),
    }


def write(out: Path, stem: str, machine: dict, settings: dict, rows: list, table: list[str]) -> None:
    """``out/stem.json`` (machine, settings, rows) and ``out/stem.md`` (the table's lines); prints the table."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps({"machine": machine, "settings": settings, "rows": rows}, indent=2))
    (out / f"{stem}.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))
