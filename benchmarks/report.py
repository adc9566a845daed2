"""Print a benchmark's figures as an aligned table and write them as one flat JSON object."""
from __future__ import annotations

import json
from pathlib import Path


def report(results: dict, json_path: Path | None = None) -> None:
    width = max(len(k) for k in results)
    for key, value in results.items():
        print(f"{key:<{width}}  {value:.4g}" if isinstance(value, float) else
              f"{key:<{width}}  {value}")
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(results, indent=1, sort_keys=True))
