"""The package as installed: the wheel carries every file the code reads at run time (kernel sources, recipes),
the commands work from any folder, recipes resolve by name, and a native kernel that cannot be built is
reported once (which kernel, why, which path computes instead) instead of being skipped silently."""

import os
import shutil
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import pytest

from compress.cli import main
from compress.config import RECIPES_DIR, load_recipe, packaged_recipes, resolve_recipe
from compress.errors import UserError
from compress.runtime import build, cuda_mma, cusparselt, linear

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("compress", "prune", "quant", "finetune", "eval")
CSRC = ROOT / "compress" / "runtime" / "csrc"
JUNK = ("__pycache__", "*.pyc", "*.egg-info", "build", "dist")


def _package_files() -> list[str]:
    """Every file under the packages in this checkout (tracked or new, not git-ignored), relative to ROOT."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "--", *PACKAGES],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        return sorted(f for f in out.splitlines() if (ROOT / f).is_file())
    except (OSError, subprocess.CalledProcessError):  # not a git checkout
        files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*") if p.is_file()]
        return sorted(str(p.relative_to(ROOT)) for p in files if "__pycache__" not in p.parts)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    """The wheel `pip wheel` builds from a copy of this checkout (so no build/ or egg-info lands in the repo)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    shutil.copy2(ROOT / "pyproject.toml", src)
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns(*JUNK))
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp), str(src)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    (whl,) = tmp.glob("llm_compress-*.whl")
    with zipfile.ZipFile(whl) as zf:
        yield zf


def test_wheel_ships_the_cuda_kernels_the_shim_and_every_recipe(wheel):
    names = set(wheel.namelist())
    for src in (cuda_mma.SRC, cusparselt.SRC):  # what the code builds on first use
        rel = src.resolve().relative_to(ROOT).as_posix()
        assert rel in names, f"{rel} (read by the runtime) is not in the wheel"
    shipped_csrc = sorted(n for n in names if n.startswith("compress/runtime/csrc/"))
    assert shipped_csrc == sorted(f"compress/runtime/csrc/{p.name}" for p in CSRC.iterdir() if p.is_file())
    for p in CSRC.iterdir():  # the sources a user builds are the repo's, byte for byte
        assert wheel.read(f"compress/runtime/csrc/{p.name}") == p.read_bytes(), p.name
    recipes = packaged_recipes()
    assert {"wanda-2of4", "dense", "wanda-50", "magnitude-2of4", "sparsegpt-2of4"} <= set(recipes)
    for name, path in recipes.items():
        assert wheel.read(f"compress/recipes/{name}.yaml") == path.read_bytes(), name
    entry_points = wheel.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    assert "llm-compress = compress.cli:main" in entry_points


def test_wheel_ships_every_file_of_the_packages(wheel):
    """Modules and data (recipes, kernel sources, any task YAML or data file added later) alike: what the
    checkout has under the packages, the wheel has; a new kind of data file needs a package-data entry in
    pyproject.toml."""
    missing = sorted(set(_package_files()) - set(wheel.namelist()))
    assert not missing, f"not in the wheel (add them to [tool.setuptools.package-data]): {missing}"
    assert not [n for n in wheel.namelist() if n.startswith(("tests/", "bench/", "recipes/"))]


def _outside(*cmd: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


def test_commands_run_from_another_folder(tmp_path):
    script = Path(sys.executable).with_name("llm-compress")
    if not script.exists():
        pytest.skip(f"no console script next to {sys.executable} (package not installed)")
    r = _outside(str(script), "recipes", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    listed = {line.split()[0] for line in r.stdout.splitlines() if line and not line.startswith("(")}
    assert listed == set(packaged_recipes())
    assert "Wanda (Sun et al. 2024) at 2:4" in r.stdout
    r = _outside(sys.executable, "-m", "compress", "run", "--help", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("usage: python -m compress run"), r.stdout + r.stderr
    assert "default: wanda-2of4" in " ".join(r.stdout.split())
    assert list(tmp_path.iterdir()) == []


def test_recipe_by_name_or_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the repo: nothing relative to it
    assert load_recipe("wanda-2of4").name == "wanda-2of4"
    for spec in ("wanda-50", "wanda-50.yaml", "recipes/wanda-50.yaml"):  # the last: where recipes used to be
        assert resolve_recipe(spec) == RECIPES_DIR / "wanda-50.yaml"
    (tmp_path / "wanda-2of4").write_text("name: mine\n")  # an existing path wins over the name
    assert load_recipe("wanda-2of4").name == "mine"
    assert load_recipe(tmp_path / "wanda-2of4").name == "mine"
    with pytest.raises(UserError) as e:
        load_recipe("wanda-2of8")
    message = str(e.value)
    assert "\n" not in message and "'wanda-2of8' not found" in message
    assert all(name in message for name in packaged_recipes())
    with pytest.raises(UserError, match="not found"):
        load_recipe("elsewhere/wanda-2of4.yaml")  # a missing path in another folder is not a name


def test_cli_recipes_and_unknown_recipe(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    for name in packaged_recipes():
        assert any(line.startswith(name + " ") and len(line.split()) > 2 for line in out.splitlines()), name
    with pytest.raises(SystemExit):
        main(["run", "--help"])  # the console script's name, as `llm-compress` calls main()
    assert capsys.readouterr().out.startswith("usage: llm-compress run ")
    assert main(["run", "--recipe", "nope", "--out", "o"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: recipe 'nope' not found") and "wanda-2of4" in err[0]
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------- kernels that cannot be built


@pytest.fixture
def fresh_kernels(monkeypatch):
    """No kernel tried or reported yet in this process; the cached results are cleared again afterwards."""

    def clear():
        for module, name in [(cuda_mma, "unavailable"), (cuda_mma, "load"), (cusparselt, "backend")]:
            getattr(getattr(module, name), "cache_clear", lambda: None)()  # (a test may have replaced one)

    monkeypatch.setattr(build, "_reported", set())
    clear()
    yield clear
    clear()


def _fake_gpu(monkeypatch, tmp_path):
    """A CUDA device of compute capability 9.0 and no CUDA toolkit (no nvcc on PATH or in CUDA_HOME)."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    monkeypatch.setattr(build.shutil, "which", lambda name: None)
    monkeypatch.setenv("CUDA_HOME", str(tmp_path / "no-cuda"))


def _reported(calls) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # Python's own once-per-location filter must not hide a repeat
        calls()
    return [str(w.message) for w in caught if issubclass(w.category, build.KernelUnavailableWarning)]


def test_missing_nvcc_is_reported_once_with_reason_and_fallback(fresh_kernels, monkeypatch, tmp_path):
    _fake_gpu(monkeypatch, tmp_path)
    results = []

    def three_times():
        for _ in range(3):  # as for every layer of a model, even with the per-process caches cleared
            results.append(linear.check_kernels())
            fresh_kernels()

    messages = _reported(three_times)
    assert results == [False] * 3
    assert len(messages) == 1, messages
    nvcc = "nvcc not found (put the CUDA toolkit's bin on PATH or set CUDA_HOME)"
    assert messages[0].startswith(f"the tensor-core 2:4 kernel (sparse24_mma.cu) is unavailable: {nvcc}; ")
    assert "calls of 1-64 tokens use cuSPARSELt instead" in messages[0]


def test_missing_kernel_source_is_reported_with_its_path(fresh_kernels, monkeypatch, tmp_path):
    _fake_gpu(monkeypatch, tmp_path)
    missing = tmp_path / "csrc" / "sparse24_mma.cu"
    monkeypatch.setattr(cuda_mma, "SRC", missing)
    messages = _reported(lambda: [linear.check_kernels() for _ in range(2)])
    assert messages == [
        f"the tensor-core 2:4 kernel (sparse24_mma.cu) is unavailable: its source {missing} is missing "
        "(an install without the package's csrc/ files?); calls of 1-64 tokens use cuSPARSELt instead"
    ]


def test_unbuildable_cusparselt_shim_is_reported_once(fresh_kernels, monkeypatch):
    monkeypatch.setattr(cusparselt, "_find", lambda name, sub: None)

    def twice():
        for _ in range(2):
            assert isinstance(cusparselt.backend(), cusparselt.TorchCslt)
            cusparselt.backend.cache_clear()

    (message,) = _reported(twice)
    assert message.startswith("the cached-plan cuSPARSELt shim (cslt_shim.cpp) is unavailable: cuSPARSELt headers")
    assert message.endswith(
        "; cuSPARSELt calls use torch._cslt_sparse_mm instead (descriptors and plan rebuilt on every call)"
    )
