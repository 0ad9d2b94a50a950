"""Pin the CPU numerics the way the commands do (compress/cpu_numerics.py), for benchmark scripts.

Must run before torch loads, and `import compress` loads torch (it registers a transformers quantizer), so the
module is read from its file rather than imported through the package. CPU figures in BENCHMARKS.md from
2026-12-01 on are pinned, as `make compress` is; LLM_COMPRESS_CPU_NUMERICS=native turns it off here too.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

FILE = Path(__file__).resolve().parent.parent / "compress" / "cpu_numerics.py"


def pin_like_the_commands() -> dict[str, str]:
    spec = importlib.util.spec_from_file_location("_llm_compress_cpu_numerics", FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.pin()
