"""Readers for a user's own images (offline; Pillow or numpy files).

``read_image_folder(root)``: one sub-folder per class (``root/cat/001.png``, ...), the
layout of torchvision's ``ImageFolder``; gives RGB images and class labels.

``read_rgbd_folder(root)``: an NYUv2-style folder of aligned files matched by file stem::

    root/rgb/0001.png      RGB image (any Pillow format, or .npy float in [0, 1] / uint8)
    root/depth/0001.png    depth: 16-bit PNG in millimetres (depth_scale=1000), or .npy metres
    root/label/0001.png    semantic ids, one channel: 8/16-bit greyscale PNG, palette PNG
                           (the palette indices are the ids), or integer .npy; void_label -> -1
    root/classes.txt       optional: semantic class names, one a line (else "class_0", ...)
    root/scenes.csv        optional: ``stem,scene_class`` lines; else the scene class is the
                           most frequent non-void semantic id among object_classes

Images are resized to ``size x size`` (RGB bilinear; depth and labels nearest, so no
depth or id is invented between surfaces). Depth 0 marks a missing value.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .scenes import Scenes

__all__ = ["IMAGE_SUFFIXES", "read_image_folder", "read_rgbd_folder"]

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".npy")


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        raise ValueError(f"size must be an integer >= 8, got {size!r}")
    return size


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _load_array(path: Path, palette_indices: bool = False) -> np.ndarray:
    """The file's pixels as a numpy array (``H, W`` or ``H, W, C``), dtype as stored. A
    palette image gives its colours, or with ``palette_indices`` its indices (label maps)."""
    if path.suffix.lower() == ".npy":
        arr = np.load(path, allow_pickle=False)
    else:
        from PIL import Image

        with Image.open(path) as img:
            if img.mode in ("P", "PA") and not palette_indices:
                img = img.convert("RGB")
            elif img.mode == "PA":
                img = img.getchannel(0)  # the indices; transparency is not a class
            arr = np.asarray(img)
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # channels-first .npy
    if arr.ndim not in (2, 3):
        raise ValueError(f"{path}: expected an image of 2 or 3 dimensions, got shape {arr.shape}")
    return arr


def _resize(arr: np.ndarray, size: int, nearest: bool) -> np.ndarray:
    """Resize ``(H, W)`` or ``(H, W, C)`` to ``(size, size[, C])`` with Pillow, per channel."""
    from PIL import Image

    if arr.shape[:2] == (size, size):
        return arr
    resample = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
    channels = arr[..., None] if arr.ndim == 2 else arr
    out = [
        np.asarray(
            Image.fromarray(
                np.ascontiguousarray(channels[..., i]).astype(np.float32), mode="F"
            ).resize((size, size), resample)
        )
        for i in range(channels.shape[-1])
    ]
    res = np.stack(out, axis=-1)
    return res[..., 0] if arr.ndim == 2 else res


def _rgb01(arr: np.ndarray, path: Path) -> np.ndarray:
    """RGB in ``[0, 1]`` float32, ``(H, W, 3)``; grey images are repeated, alpha dropped."""
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.shape[-1] == 4:
        arr = arr[..., :3]
    if arr.shape[-1] != 3:
        raise ValueError(f"{path}: an RGB image needs 1, 3 or 4 channels, got shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.float32) / float(np.iinfo(arr.dtype).max)
    arr = arr.astype(np.float32)
    if not np.all(np.isfinite(arr)) or arr.min() < 0.0 or arr.max() > 1.0:
        raise ValueError(f"{path}: float RGB values must be finite and in [0, 1]")
    return arr


def read_image_folder(
    root: str | Path, size: int = 32, max_per_class: int | None = None
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Images of ``root/<class>/*`` as ``(rgb float32 (N, 3, size, size), labels, classes)``.

    Classes are the sub-folder names in sorted order; ``max_per_class`` keeps the first
    files of each class (sorted by name).
    """
    root = Path(root)
    size = _check_size(size)
    if not root.is_dir():
        raise ValueError(f"root must be an existing folder, got {str(root)!r}")
    if max_per_class is not None and (not isinstance(max_per_class, int) or max_per_class < 1):
        raise ValueError(f"max_per_class must be None or an integer >= 1, got {max_per_class!r}")
    classes = tuple(sorted(p.name for p in root.iterdir() if p.is_dir()))
    if len(classes) < 2:
        raise ValueError(f"{root}: an image folder needs at least 2 class sub-folders")
    images: list[np.ndarray] = []
    labels: list[int] = []
    for index, name in enumerate(classes):
        files = _files(root / name)[:max_per_class]
        if not files:
            raise ValueError(f"{root / name}: no image files ({', '.join(IMAGE_SUFFIXES)})")
        for path in files:
            rgb = _rgb01(_load_array(path), path)
            images.append(np.clip(_resize(rgb, size, nearest=False), 0.0, 1.0))
            labels.append(index)
    rgb = np.stack(images).transpose(0, 3, 1, 2).astype(np.float32)
    return np.ascontiguousarray(rgb), np.asarray(labels, dtype=np.int64), classes


def _by_stem(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise ValueError(f"missing folder {str(folder)!r}")
    found: dict[str, Path] = {}
    for path in _files(folder):
        if path.stem in found:
            raise ValueError(f"{folder}: two files share the stem {path.stem!r}")
        found[path.stem] = path
    return found


def read_rgbd_folder(
    root: str | Path,
    size: int = 32,
    depth_scale: float = 1000.0,
    void_label: int | None = 0,
    object_classes: Sequence[int] | None = None,
    max_depth: float | None = None,
) -> Scenes:
    """An NYUv2-style folder (``rgb/``, ``depth/``, ``label/``) as :class:`Scenes`.

    ``depth_scale``: integer depth files are divided by it (1000: millimetres to metres);
    float ``.npy`` depth is taken as metres. ``void_label``: the id of unlabelled pixels
    (NYUv2: 0), mapped to -1 and left out of losses and metrics; the remaining ids are
    kept as they are (``num_classes = max id + 1``). ``object_classes``: the ids that may
    give the scene class (default: every id). ``max_depth``: normalisation depth
    (default: the largest depth read).
    """
    root = Path(root)
    size = _check_size(size)
    if not (isinstance(depth_scale, int | float) and depth_scale > 0):
        raise ValueError(f"depth_scale must be a number > 0, got {depth_scale!r}")
    rgb_files, depth_files, label_files = (
        _by_stem(root / name) for name in ("rgb", "depth", "label")
    )
    stems = sorted(rgb_files)
    if not stems:
        raise ValueError(f"{root / 'rgb'}: no image files")
    missing = [s for s in stems if s not in depth_files or s not in label_files]
    if missing:
        raise ValueError(f"{root}: no depth or label file for {missing[:5]} (matched by stem)")
    rgbs, depths, sems = [], [], []
    for stem in stems:
        rgb = _rgb01(_load_array(rgb_files[stem]), rgb_files[stem])
        raw_depth = _load_array(depth_files[stem])
        if raw_depth.ndim == 3:
            raw_depth = raw_depth[..., 0]
        if np.issubdtype(raw_depth.dtype, np.integer):
            depth = raw_depth.astype(np.float32) / float(depth_scale)
        else:
            depth = raw_depth.astype(np.float32)
        if not np.all(np.isfinite(depth)) or depth.min() < 0:
            raise ValueError(f"{depth_files[stem]}: depth must be finite and >= 0")
        label = _load_array(label_files[stem], palette_indices=True)
        if label.ndim == 3 and label.shape[-1] == 1:
            label = label[..., 0]
        if label.ndim == 3:
            raise ValueError(
                f"{label_files[stem]}: a label map needs one channel of class ids (a greyscale "
                f"or palette PNG, or an (H, W) .npy), got {label.shape[-1]} channels"
            )
        if not np.issubdtype(label.dtype, np.integer):
            raise ValueError(f"{label_files[stem]}: labels must be integers, got {label.dtype}")
        if not rgb.shape[:2] == depth.shape == label.shape:
            raise ValueError(
                f"{root}: {stem!r} has rgb {rgb.shape[:2]}, depth {depth.shape}, label "
                f"{label.shape}; they must be the same size"
            )
        rgbs.append(np.clip(_resize(rgb, size, nearest=False), 0.0, 1.0))
        depths.append(_resize(depth, size, nearest=True))
        sems.append(np.rint(_resize(label.astype(np.float32), size, nearest=True)))
    semantic = np.stack(sems).astype(np.int64)
    if void_label is not None:
        semantic = np.where(semantic == void_label, -1, semantic)
    if semantic.min() < -1:
        raise ValueError(f"{root}: label ids must be >= 0")
    num_classes = int(semantic.max()) + 1
    if num_classes < 2:
        raise ValueError(f"{root}: need at least 2 semantic classes, found {num_classes}")
    names_file = root / "classes.txt"
    if names_file.is_file():
        names = tuple(
            line.strip()
            for line in names_file.read_text(encoding="utf-8").splitlines()
            if line.strip()
        )
        if len(names) < num_classes:
            raise ValueError(f"{names_file}: {len(names)} names for {num_classes} class ids")
        class_names = names
    else:
        class_names = tuple(f"class_{i}" for i in range(num_classes))
    label, label_names = _scene_labels(root, stems, semantic, class_names, object_classes)
    depth_arr = np.stack(depths)[:, None].astype(np.float32)
    top = float(depth_arr.max()) if max_depth is None else float(max_depth)
    if not top > 0:
        raise ValueError("max_depth must be > 0 (and the depth files must not be all zero)")
    return Scenes(
        rgb=np.ascontiguousarray(np.stack(rgbs).transpose(0, 3, 1, 2).astype(np.float32)),
        depth=depth_arr,
        semantic=semantic,
        label=label,
        class_names=class_names,
        label_names=label_names,
        max_depth=top,
    )


def _scene_labels(
    root: Path,
    stems: list[str],
    semantic: np.ndarray,
    class_names: tuple[str, ...],
    object_classes: Sequence[int] | None,
) -> tuple[np.ndarray, tuple[str, ...]]:
    table = root / "scenes.csv"
    if table.is_file():
        with table.open(newline="", encoding="utf-8") as fh:
            rows = {r[0].strip(): r[1].strip() for r in csv.reader(fh) if len(r) >= 2}
        absent = [s for s in stems if s not in rows]
        if absent:
            raise ValueError(f"{table}: no scene class for {absent[:5]}")
        names = tuple(sorted(set(rows[s] for s in stems)))
        return np.asarray([names.index(rows[s]) for s in stems], dtype=np.int64), names
    ids = (
        list(range(len(class_names)))
        if object_classes is None
        else [int(i) for i in object_classes]
    )
    if not ids or min(ids) < 0 or max(ids) >= len(class_names):
        raise ValueError(f"object_classes must be ids in [0, {len(class_names)}), got {ids}")
    flat = semantic.reshape(semantic.shape[0], -1)
    counts = np.stack([(flat == i).sum(axis=1) for i in ids], axis=1)
    return np.argmax(counts, axis=1).astype(np.int64), tuple(class_names[i] for i in ids)
