"""Every packaged recipe gives the same checkpoint, bit for bit, as when tests/golden/recipe_checkpoints.json was
written (issue 14: the stages redesign must not change any shipped recipe's output). Run in a subprocess with the
commands' pinned CPU numerics, so the hashes do not depend on the machine's instruction set."""

import json
import os
import subprocess
import sys
from pathlib import Path

from compress.cpu_numerics import PINNED, SWITCH

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden" / "recipe_checkpoints.json"


def test_every_packaged_recipe_gives_its_golden_checkpoint():
    env = {k: v for k, v in os.environ.items() if k not in (*PINNED, SWITCH)} | PINNED
    out = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "recipe_checkpoints.py")],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    golden = json.loads(GOLDEN.read_text())
    assert sorted(got) == sorted(golden), "a recipe was added or removed: refresh the golden file on purpose"
    changed = [name for name in golden if got[name] != golden[name]]
    assert not changed, f"checkpoints changed for {changed}: {[(got[n], golden[n]) for n in changed]}"
