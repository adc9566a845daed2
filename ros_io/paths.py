"""Where this package's data files are: the installed share directory, else the source tree."""
from __future__ import annotations

from pathlib import Path

PACKAGE = "world_model_planning"


def share_path(*parts: str) -> Path:
    """share/world_model_planning/<parts> when installed (and present), else <repo>/<parts>."""
    try:
        from ament_index_python.packages import get_package_share_directory
        installed = Path(get_package_share_directory(PACKAGE), *parts)
        if installed.exists():
            return installed
    except (ImportError, LookupError, ValueError):
        pass
    return Path(__file__).resolve().parent.parent.joinpath(*parts)
