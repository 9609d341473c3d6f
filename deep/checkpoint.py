"""Atomic, code-free checkpoints.

A checkpoint is a directory ``<checkpoint_dir>/step_00000100/`` with

============================  ==================================================
file                           contents
============================  ==================================================
``model.safetensors``          model weights (shared tensors stored once)
``optimizer.pt``               ``optimizer.state_dict()`` (loaded with ``weights_only=True``)
``state.safetensors``          every other tensor: rule and estimator state, running sums,
                               history, per-rank torch RNG states
``meta.json``                  step, data position, configuration (including the
                               learning-rate schedule, a pure function of the step, so
                               the step is the scheduler's whole state), Python/numpy RNG
                               states, the SHA-256 of the three files above, and
                               ``meta_sha256``, the SHA-256 of its own other fields
                               (canonical JSON: sorted keys, no spaces)
``config.json``                only for a model with ``save_pretrained`` (``transformers``):
                               its configuration, so the step folder is also a Hugging Face
                               model folder (``AutoModel*.from_pretrained(step_dir)``); resume
                               does not read it
============================  ==================================================

It is written into a hidden temporary directory that is renamed into place only when
complete (``meta.json`` last, every file flushed to disk), so a crash never leaves a
half-written checkpoint behind. Pruning renames an old checkpoint to a hidden name before
deleting it, so a crash during pruning never leaves a half-deleted ``step_*`` that looks
complete; :func:`clean_stale` removes such hidden leftovers. Loading checks the hashes (a
corrupted or edited file, ``meta.json`` included, is an error, never silently loaded) and
never unpickles arbitrary objects: safetensors for tensors, JSON for metadata,
``torch.load(weights_only=True)`` for the optimizer state.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shutil
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, load_model, save_file, save_model

__all__ = [
    "FORMAT_VERSION",
    "Checkpoint",
    "CheckpointError",
    "clean_stale",
    "find_latest",
    "list_checkpoints",
    "load_checkpoint",
    "load_model_weights",
    "meta_int",
    "write_checkpoint",
    "write_hf_config",
]

FORMAT_VERSION = 2
"""2: ``meta.json`` carries ``meta_sha256``. Format 1 (no such hash) is read with a warning."""
_STEP_DIR = re.compile(r"^step_(\d+)$")
_STALE_DIR = re.compile(r"^\.(tmp|old|del)-step_\d+-")
_FILES = ("model.safetensors", "optimizer.pt", "state.safetensors")


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupted, or does not match this run."""


@dataclass(frozen=True)
class Checkpoint:
    """A verified checkpoint: its ``path``, ``meta`` (JSON), tensors and optimizer state."""

    path: Path
    meta: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.meta["step"])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _meta_digest(meta: Mapping[str, Any]) -> str:
    """SHA-256 of ``meta`` without its ``meta_sha256`` field, as canonical JSON."""
    body = {k: v for k, v in meta.items() if k != "meta_sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _safe_digest(meta: Mapping[str, Any]) -> str | None:
    """:func:`_meta_digest`, or ``None`` for metadata no writer of ours produces (NaN)."""
    try:
        return _meta_digest(meta)
    except (ValueError, TypeError):
        return None


def meta_int(
    meta: Mapping[str, Any],
    key: str,
    path: Path,
    minimum: int = 0,
    maximum: int | None = None,
) -> int:
    """``meta[key]`` as an integer in ``[minimum, maximum]``, else a :class:`CheckpointError`
    naming the field."""
    value = meta.get(key)
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        upper = "" if maximum is None else f" and <= {maximum}"
        raise CheckpointError(
            f"checkpoint {path}: meta.json field {key!r} must be an integer >= {minimum}{upper}, "
            f"got {value!r}"
        )
    return value


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some filesystems cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _is_complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in (*_FILES, "meta.json"))


def list_checkpoints(checkpoint_dir: str | os.PathLike[str]) -> list[Path]:
    """Complete checkpoints in ``checkpoint_dir`` (``step_*`` folders holding ``meta.json``
    and the three files it hashes), oldest first. Hidden temporaries are never listed."""
    root = Path(checkpoint_dir)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and child.is_dir() and _is_complete(child):
            found.append((int(match.group(1)), child))
    return [path for _, path in sorted(found)]


def clean_stale(checkpoint_dir: str | os.PathLike[str]) -> list[Path]:
    """Delete the hidden ``.tmp-step_*``, ``.old-step_*`` and ``.del-step_*`` folders a killed
    writer left in ``checkpoint_dir``; returns what was removed. Call it with no writer
    running (``deep.pretrain`` does, at its start)."""
    root = Path(checkpoint_dir)
    if not root.is_dir():
        return []
    stale = [c for c in root.iterdir() if c.is_dir() and _STALE_DIR.match(c.name)]
    for folder in stale:
        shutil.rmtree(folder, ignore_errors=True)
    return stale


def _remove(folder: Path) -> None:
    """Rename ``folder`` to a hidden name, then delete it: a crash in between leaves a
    hidden leftover for :func:`clean_stale`, never a half-deleted checkpoint."""
    trash = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".del-{folder.name}-"))
    os.replace(folder, trash / folder.name)
    _fsync_dir(folder.parent)
    shutil.rmtree(trash, ignore_errors=True)


def find_latest(checkpoint_dir: str | os.PathLike[str]) -> Path | None:
    """The newest complete checkpoint in ``checkpoint_dir``, or ``None``; warns about newer
    ``step_*`` folders that are incomplete (damaged outside this library) and so skipped."""
    found = list_checkpoints(checkpoint_dir)
    latest = found[-1] if found else None
    root = Path(checkpoint_dir)
    newest = int(_STEP_DIR.match(latest.name).group(1)) if latest is not None else -1  # type: ignore[union-attr]
    skipped = (
        sorted(
            c.name
            for c in root.iterdir()
            if c.is_dir() and (m := _STEP_DIR.match(c.name)) and int(m.group(1)) > newest
        )
        if root.is_dir()
        else []
    )
    if skipped:
        warnings.warn(
            f"{root}: skipping incomplete checkpoint folders {skipped} (a file is missing); "
            f"the newest complete one is {latest.name if latest is not None else 'none'}",
            UserWarning,
            stacklevel=2,
        )
    return latest


def write_hf_config(model: torch.nn.Module, folder: Path) -> list[Path]:
    """For a ``transformers`` model (one with ``save_pretrained`` and ``config``), write its
    ``config.json`` (and ``generation_config.json`` when it has one) into ``folder``:
    beside ``model.safetensors`` (metadata ``format: pt``), the folder is then a Hugging
    Face model folder. Other models: nothing. Returns the files written."""
    config = getattr(model, "config", None)
    if not callable(getattr(model, "save_pretrained", None)) or config is None:
        return []
    config.save_pretrained(str(folder))
    written = [folder / "config.json"]
    generation = getattr(model, "generation_config", None)
    if generation is not None and callable(getattr(generation, "save_pretrained", None)):
        generation.save_pretrained(str(folder))
        written.append(folder / "generation_config.json")
    return written


def write_checkpoint(
    checkpoint_dir: str | os.PathLike[str],
    *,
    step: int,
    model: torch.nn.Module,
    optimizer_state: Mapping[str, Any],
    tensors: Mapping[str, torch.Tensor],
    meta: Mapping[str, Any],
    keep: int | None = None,
) -> Path:
    """Write ``step_<step>/`` atomically and keep only the newest ``keep`` checkpoints."""
    root = Path(checkpoint_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:08d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".tmp-step_{step:08d}-"))
    try:
        save_model(model, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        write_hf_config(model, tmp)
        torch.save(dict(optimizer_state), tmp / "optimizer.pt")
        cpu_tensors = {k: v.detach().cpu().clone() for k, v in tensors.items()}
        save_file(cpu_tensors, str(tmp / "state.safetensors"))
        full_meta = dict(meta)
        full_meta["format"] = FORMAT_VERSION
        full_meta["step"] = step
        full_meta["files"] = {name: _sha256(tmp / name) for name in _FILES}
        full_meta["meta_sha256"] = _meta_digest(full_meta)
        with open(tmp / "meta.json", "w", encoding="utf-8") as fh:
            json.dump(full_meta, fh, indent=1, allow_nan=False)
        for name in (*_FILES, "meta.json"):
            _fsync_file(tmp / name)
        _fsync_dir(tmp)
        if final.exists():  # an older run wrote the same step: replace it
            trash = Path(tempfile.mkdtemp(dir=root, prefix=f".old-step_{step:08d}-"))
            os.replace(final, trash / final.name)
            _fsync_dir(root)
            os.replace(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if keep is not None:
        for old in list_checkpoints(root)[:-keep]:
            if old != final:
                _remove(old)
    return final


def resolve(path: str | os.PathLike[str]) -> Path:
    """A checkpoint directory, or the newest one inside a checkpoint root."""
    path = Path(path)
    if (path / "meta.json").is_file():
        return path
    latest = find_latest(path)
    if latest is None:
        raise CheckpointError(
            f"no checkpoint at {path}: expected a step_XXXXXXXX directory with meta.json, or a "
            "folder containing such directories"
        )
    return latest


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read and verify a checkpoint (``path`` may be its root folder: the newest is used)."""
    path = resolve(path)
    try:
        with open(path / "meta.json", encoding="utf-8") as fh:
            meta = json.load(fh)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(
            f"checkpoint {path} is corrupted: cannot read meta.json ({err})"
        ) from err
    if not isinstance(meta, dict) or meta.get("format") not in (1, FORMAT_VERSION):
        raise CheckpointError(
            f"checkpoint {path} has format {meta.get('format') if isinstance(meta, dict) else None!r}; "
            f"this version reads formats 1 and {FORMAT_VERSION}"
        )
    if meta["format"] == 1:
        warnings.warn(
            f"checkpoint {path} has format 1: its meta.json carries no hash, so an edit to it "
            "cannot be detected",
            UserWarning,
            stacklevel=2,
        )
    elif meta.get("meta_sha256") != _safe_digest(meta):
        raise CheckpointError(
            f"checkpoint {path} is corrupted or was edited: meta.json does not match its "
            "meta_sha256 (an edited step, position or state would resume on another trajectory)"
        )
    step = meta_int(meta, "step", path)
    named = _STEP_DIR.match(path.name)
    if named and int(named.group(1)) != step:
        raise CheckpointError(
            f"checkpoint {path}: meta.json field 'step' is {step}, but the folder is named "
            f"for step {int(named.group(1))}"
        )
    files = meta.get("files")
    if not isinstance(files, dict):
        raise CheckpointError(f"checkpoint {path}: meta.json field 'files' must be an object")
    for name in _FILES:
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"checkpoint {path} is incomplete: {name} is missing")
        if files.get(name) != _sha256(file):
            raise CheckpointError(
                f"checkpoint {path} is corrupted: {name} does not match its SHA-256 in meta.json"
            )
    try:
        tensors = load_file(str(path / "state.safetensors"))
        optimizer_state = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        boilerplate = ("Weights only load failed", "Check the documentation", "Please file")
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        reason = "; ".join(x for x in lines if not x.startswith(boilerplate)) or repr(err)
        raise CheckpointError(
            f"checkpoint {path}: optimizer.pt holds more than tensors and plain values, so it "
            f"was not loaded (no code in it ran): {reason}"
        ) from err
    except (SafetensorError, RuntimeError, OSError, EOFError) as err:
        raise CheckpointError(f"checkpoint {path} is corrupted: {err}") from err
    return Checkpoint(path, meta, tensors, optimizer_state)


def _check_model_file(model: torch.nn.Module, file: Path) -> None:
    """Names and shapes in ``file`` against ``model`` before anything is copied."""
    with safe_open(str(file), framework="pt") as fh:
        shapes = {key: tuple(fh.get_slice(key).get_shape()) for key in fh.keys()}
    state = model.state_dict()
    wrong = [
        f"{k}: checkpoint {shapes[k]} vs model {tuple(v.shape)}"
        for k, v in state.items()
        if k in shapes and tuple(v.shape) != shapes[k]
    ]
    unexpected = sorted(set(shapes) - set(state))
    groups: dict[tuple[int, int], list[str]] = {}
    for k, v in state.items():  # tied tensors are stored once under one of their names
        groups.setdefault((v.untyped_storage().data_ptr(), v.storage_offset()), []).append(k)
    missing = sorted(k for names in groups.values() if not set(names) & set(shapes) for k in names)
    if wrong or unexpected or missing:
        raise CheckpointError(
            f"checkpoint {file.parent} does not match the model: shape mismatches {wrong[:5]}, "
            f"missing keys {missing[:10]}, unexpected keys {unexpected[:10]}"
        )


def load_model_weights(model: torch.nn.Module, checkpoint: Checkpoint) -> None:
    """Load ``model.safetensors`` into ``model``; names and shapes must match exactly.

    Everything is checked before the first tensor is copied, so a mismatch leaves ``model``
    untouched.
    """
    file = checkpoint.path / "model.safetensors"
    try:
        _check_model_file(model, file)
        load_model(model, str(file), strict=True)
    except (RuntimeError, SafetensorError) as err:
        raise CheckpointError(
            f"checkpoint {checkpoint.path} does not match the model: {err}"
        ) from err
