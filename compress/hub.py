"""Push a checkpoint folder to the Hugging Face Hub (create_repo + upload_folder), with an offline dry run."""

from __future__ import annotations

import re
from pathlib import Path

from compress.checkpoint_format import SPARSE_24, parse_config
from compress.errors import UserError
from compress.export import weight_files
from prune.masks import satisfies_nm

REPO_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")


def check_repo_id(repo: str) -> str:
    if not REPO_RE.fullmatch(repo or "") or ".." in repo:
        raise UserError(
            f"repository name {repo!r} is not 'owner/name' (letters, digits, '-', '_', '.'); e.g. alice/smollm2-2of4"
        )
    return repo


def _ignored(module: str, ignore: list[str]) -> bool:
    """compressed-tensors `ignore` semantics: exact module names, or `re:` regexes (llm-compressor writes those)."""
    return any(re.match(p[3:], module) if p.startswith("re:") else p == module for p in ignore)


def validate_folder(folder: Path) -> list[tuple[str, int]]:
    """Check config, weights (loaded as `eval` loads them: every 2:4 bitmask decoded and checked, nothing missing,
    unexpected or non-finite), tokenizer and card; return (file, bytes) to upload."""
    from compress.loading import load

    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder; pass a checkpoint folder written by `python -m compress run`")
    if not (folder / "config.json").exists():
        raise UserError(f"{folder} has no config.json")
    config = parse_config(folder / "config.json")  # JSON only: a folder without weights says so first
    weight_files(folder)  # a folder without weights says so before the finer config checks
    loaded = load(folder, None)
    if loaded.format == SPARSE_24:
        sparsity = (config.get("quantization_config") or {}).get("sparsity_config") or {}
        ignore = list(sparsity.get("ignore", []))
        for name, t in loaded.model.state_dict().items():
            module = name.removesuffix(".weight")
            if name.endswith(".weight") and t.dim() == 2 and not _ignored(module, ignore) and "embed" not in name:
                if not satisfies_nm(t, 2, 4):
                    raise UserError(f"{folder}: {module} is declared 2:4 but is not; re-export the checkpoint")
    if not any((folder / f).exists() for f in TOKENIZER_FILES):
        raise UserError(f"{folder} has no tokenizer files ({' or '.join(TOKENIZER_FILES)}); re-export it")
    if not (folder / "README.md").exists():
        raise UserError(f"{folder} has no model card; run `python -m compress card --model-dir {folder}`")
    return [(str(p.relative_to(folder)), p.stat().st_size) for p in sorted(folder.rglob("*")) if p.is_file()]


def push(folder: Path, repo: str, *, private: bool = True, dry_run: bool = False, log=print) -> str | None:
    """Validate, then create the repo and upload; returns the commit URL (None for a dry run)."""
    check_repo_id(repo)
    files = validate_folder(folder)
    total = sum(size for _, size in files)
    log(
        f"{'would upload' if dry_run else 'uploading'} {len(files)} files ({total / 1e6:.1f} MB) to "
        f"{'private' if private else 'public'} repo {repo}:"
    )
    for name, size in files:
        log(f"  {name:40s} {size / 1e6:10.2f} MB")
    if dry_run:
        return None
    from huggingface_hub import create_repo, get_token, upload_folder

    from compress.sources import hub_reachable

    if not hub_reachable():
        raise UserError("the Hugging Face Hub is unreachable (no network); nothing was pushed. Retry when online")
    if not get_token():
        raise UserError("no Hugging Face token; run `hf auth login` or set HF_TOKEN. Nothing was pushed")
    try:
        create_repo(repo, private=private, exist_ok=True)
        info = upload_folder(repo_id=repo, folder_path=str(folder), commit_message="Upload compressed checkpoint")
    except Exception as e:  # noqa: BLE001 - one line, and nothing claimed as pushed
        raise UserError(
            f"push to {repo} failed ({str(e).splitlines()[0][:200]}); nothing is reported as pushed"
        ) from None
    return info.commit_url
