"""Readers of a user's images, on small files written here (PNG via Pillow, and .npy)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from deep.apps.mae.readers import read_image_folder, read_rgbd_folder


def _png(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)


def test_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    red = np.zeros((20, 20, 3), np.uint8)
    red[..., 0] = 255
    _png(tmp_path / "red" / "a.png", red)
    _png(tmp_path / "red" / "b.png", red)
    _png(tmp_path / "zgrey" / "g.png", np.full((12, 12), 128, np.uint8))  # grey -> 3 channels
    np.save(tmp_path / "zgrey" / "h.npy", rng.uniform(0, 1, (3, 16, 16)).astype(np.float32))
    (tmp_path / "zgrey" / "notes.txt").write_text("not an image")
    rgb, labels, classes = read_image_folder(tmp_path, size=8)
    assert classes == ("red", "zgrey")
    np.testing.assert_array_equal(labels, [0, 0, 1, 1])
    assert rgb.shape == (4, 3, 8, 8) and rgb.dtype == np.float32
    np.testing.assert_allclose(rgb[0, 0], 1.0)
    np.testing.assert_allclose(rgb[0, 1:], 0.0)
    np.testing.assert_allclose(rgb[2], 128 / 255, rtol=1e-6)
    assert 0.0 <= rgb[3].min() and rgb[3].max() <= 1.0
    rgb, labels, _ = read_image_folder(tmp_path, size=8, max_per_class=1)
    np.testing.assert_array_equal(labels, [0, 1])


def test_image_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="root"):
        read_image_folder(tmp_path / "missing")
    (tmp_path / "only").mkdir()
    with pytest.raises(ValueError, match="2 class"):
        read_image_folder(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        read_image_folder(tmp_path)
    np.save(tmp_path / "only" / "x.npy", np.full((8, 8, 3), 2.0))
    np.save(tmp_path / "empty" / "y.npy", np.full((8, 8, 3), 0.5))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        read_image_folder(tmp_path)
    with pytest.raises(ValueError, match="size"):
        read_image_folder(tmp_path, size=4)


def _rgbd(root, n=4, size=16, void=True):
    rng = np.random.default_rng(1)
    for i in range(n):
        stem = f"{i:04d}"
        _png(root / "rgb" / f"{stem}.png", rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
        depth_mm = np.full((size, size), 2000 + 500 * i, np.uint16)
        depth_mm[:2, :2] = 0  # missing
        _png(root / "depth" / f"{stem}.png", depth_mm)
        label = np.full((size, size), 1, np.uint8)
        label[size // 2 :, :] = 2 + (i % 2)
        if void:
            label[:2, :] = 0
        _png(root / "label" / f"{stem}.png", label)


def test_rgbd_folder(tmp_path):
    _rgbd(tmp_path)
    (tmp_path / "classes.txt").write_text("void\nwall\nchair\ntable\n")
    s = read_rgbd_folder(tmp_path, size=8)
    assert s.rgb.shape == (4, 3, 8, 8) and s.depth.shape == (4, 1, 8, 8)
    assert s.semantic.shape == (4, 8, 8) and s.semantic.dtype == np.int64
    # millimetres -> metres, nearest resize keeps values exact; 0 stays missing
    np.testing.assert_allclose(np.unique(s.depth[1]), [0.0, 2.5])
    assert s.max_depth == pytest.approx(3.5)
    # void (0) -> -1; the other ids unchanged
    assert set(np.unique(s.semantic)) == {-1, 1, 2, 3}
    assert (s.semantic[:, 0] == -1).all() and (s.depth[:, 0, 0, 0] == 0).all()
    assert s.class_names == ("void", "wall", "chair", "table")
    # scene class = the most frequent non-void id: 'wall' (rows 2..7) vs 'chair'/'table' (8 rows)
    assert [s.label_names[k] for k in s.label] == ["chair", "table", "chair", "table"]


def test_rgbd_scene_table_and_npy(tmp_path):
    rng = np.random.default_rng(2)
    for i, name in enumerate(["kitchen", "office", "kitchen"]):
        for sub, arr in (
            ("rgb", rng.uniform(0, 1, (10, 10, 3)).astype(np.float32)),
            ("depth", np.full((10, 10), 1.5 + i, np.float32)),  # float .npy = metres
            ("label", np.arange(100, dtype=np.int32).reshape(10, 10) % 3),
        ):
            (tmp_path / sub).mkdir(exist_ok=True)
            np.save(tmp_path / sub / f"s{i}.npy", arr)
        with (tmp_path / "scenes.csv").open("a") as fh:
            fh.write(f"s{i},{name}\n")
    s = read_rgbd_folder(tmp_path, size=10, void_label=None)
    assert s.label_names == ("kitchen", "office")
    np.testing.assert_array_equal(s.label, [0, 1, 0])
    np.testing.assert_allclose(s.depth[:, 0, 0, 0], [1.5, 2.5, 3.5])
    assert s.num_classes == 3 and s.class_names == ("class_0", "class_1", "class_2")


def test_rgbd_errors(tmp_path):
    _rgbd(tmp_path, n=2)
    (tmp_path / "label" / "0001.png").unlink()
    with pytest.raises(ValueError, match="no depth or label file"):
        read_rgbd_folder(tmp_path)
    _rgbd(tmp_path, n=2)
    _png(tmp_path / "depth" / "0001.png", np.zeros((5, 5), np.uint16))
    with pytest.raises(ValueError, match="same size"):
        read_rgbd_folder(tmp_path)
    with pytest.raises(ValueError, match="missing folder"):
        read_rgbd_folder(tmp_path / "nope")
    with pytest.raises(ValueError, match="depth_scale"):
        read_rgbd_folder(tmp_path, depth_scale=0)


def _palette_png(path, ids):
    """A palette ('P') PNG whose indices are ``ids``; index k is coloured (37 k, 200 - k, 9)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(ids.astype(np.uint8), mode="P")
    img.putpalette([c for k in range(256) for c in (37 * k % 256, (200 - k) % 256, 9)])
    img.save(path)


def test_palette_label_pngs_are_read_as_indices(tmp_path):
    """Before: converted to RGB and channel 0 taken, so ids 0..3 became 0, 37, 74, 111."""
    _rgbd(tmp_path, n=2, size=8)
    ids = np.zeros((8, 8), np.uint8)
    ids[:, 2:4], ids[:, 4:6], ids[:, 6:] = 1, 2, 3
    for stem in ("0000", "0001"):
        _palette_png(tmp_path / "label" / f"{stem}.png", ids)
    assert Image.open(tmp_path / "label" / "0000.png").mode == "P"
    s = read_rgbd_folder(tmp_path, size=8, void_label=None)
    np.testing.assert_array_equal(s.semantic[0], ids)
    assert s.num_classes == 4


def test_multi_channel_label_pngs_are_refused(tmp_path):
    """Before: an RGB label map silently took its red channel."""
    _rgbd(tmp_path, n=2, size=8)
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 1] = 2  # the ids live in green: channel 0 would read all zeros
    _png(tmp_path / "label" / "0001.png", rgb)
    with pytest.raises(ValueError, match=r"0001\.png: a label map needs one channel .* got 3"):
        read_rgbd_folder(tmp_path, size=8)
    np.save(tmp_path / "label" / "0001.npy", np.ones((8, 8, 1), np.int64))  # (H, W, 1) is fine
    (tmp_path / "label" / "0001.png").unlink()
    assert read_rgbd_folder(tmp_path, size=8).semantic.shape == (2, 8, 8)
