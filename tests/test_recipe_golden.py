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
    printed = json.loads(out.stdout.strip().splitlines()[-1])
    got, here = printed["checkpoints"], printed["machine"]
    machines = json.loads(GOLDEN.read_text())["machines"]
    for name, golden in machines.items():
        assert sorted(got) == sorted(golden), f"a recipe was added or removed: refresh {name}'s set on purpose"
    if here in machines:  # this CPU's own set: every hash must match it
        golden = machines[here]
    else:  # a CPU without a set: the checkpoints must be one known machine's, whole
        golden = min(machines.values(), key=lambda g: sum(got[n] != g[n] for n in g))
    changed = [name for name in golden if got[name] != golden[name]]
    assert not changed, (
        f"checkpoints changed for {changed} on {here!r} (known machines: {list(machines)}); if no code changed "
        f"them, store this CPU's set from a known-good commit with `python tests/recipe_checkpoints.py --write`: "
        f"{[(got[n], golden[n]) for n in changed]}"
    )
