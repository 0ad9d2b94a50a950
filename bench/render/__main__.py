"""`python -m bench.render` (or `python bench/render`): write BENCHMARKS.md from bench/*.json."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))
from bench.render import main  # noqa: E402

main()
