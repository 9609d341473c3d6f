"""The procedural scene generator: modalities agree with each other and with the geometry."""

from __future__ import annotations

import numpy as np
import pytest

from deep.apps.mae.scenes import (
    OBJECT_CLASSES,
    SEGMENT_CLASSES,
    SceneConfig,
    generate_scenes,
    scene_labels_from_semantic,
)

WALL, FLOOR = 0, 1


@pytest.fixture(scope="module")
def scenes():
    return generate_scenes(64, SceneConfig(size=32), seed=3)


def test_shapes_dtypes_and_ranges(scenes):
    n = 64
    assert scenes.rgb.shape == (n, 3, 32, 32) and scenes.rgb.dtype == np.float32
    assert scenes.depth.shape == (n, 1, 32, 32) and scenes.depth.dtype == np.float32
    assert scenes.semantic.shape == (n, 32, 32) and scenes.semantic.dtype == np.int64
    assert scenes.label.shape == (n,) and scenes.label.dtype == np.int64
    assert 0.0 <= scenes.rgb.min() and scenes.rgb.max() <= 1.0
    assert np.all(np.isfinite(scenes.depth)) and scenes.depth.min() > 0
    assert scenes.depth.max() <= scenes.max_depth
    assert set(np.unique(scenes.semantic)) <= set(range(len(SEGMENT_CLASSES)))
    assert scenes.class_names == SEGMENT_CLASSES and scenes.label_names == OBJECT_CLASSES


def test_seeded_and_deterministic():
    a = generate_scenes(5, seed=1)
    b = generate_scenes(5, seed=1)
    c = generate_scenes(5, seed=2)
    for x, y in ((a.rgb, b.rgb), (a.depth, b.depth), (a.semantic, b.semantic)):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.rgb, c.rgb)


def test_wall_is_flat_and_farthest(scenes):
    """Every wall pixel of a scene has the same depth, the largest in the scene."""
    for depth, sem in zip(scenes.depth[:, 0], scenes.semantic, strict=True):
        wall = depth[sem == WALL]
        assert wall.size > 0
        np.testing.assert_allclose(wall, wall[0], rtol=1e-6)
        assert depth.max() == pytest.approx(wall[0], rel=1e-6)
        assert np.all(depth[sem != WALL] < wall[0])


def test_floor_is_a_plane(scenes):
    """Floor depth ``z = h / (v - v_h)``: ``1/z`` is affine in the row and constant along
    rows; rows below the horizon are floor unless an object covers them."""
    size = scenes.depth.shape[-1]
    v = (np.arange(size) + 0.5) / size * 2 - 1
    for depth, sem in zip(scenes.depth[:, 0], scenes.semantic, strict=True):
        rows, cols = np.nonzero(sem == FLOOR)
        inv = 1.0 / depth[rows, cols]
        a, b = np.polyfit(v[rows], inv, 1)
        np.testing.assert_allclose(a * v[rows] + b, inv, atol=1e-4)
        assert a > 0  # nearer (larger 1/z) further down the image


def test_objects_stand_in_front_of_the_background(scenes):
    """Object pixels are nearer than the wall and than the floor plane behind them."""
    size = scenes.depth.shape[-1]
    v = (np.arange(size) + 0.5) / size * 2 - 1
    for depth, sem in zip(scenes.depth[:, 0], scenes.semantic, strict=True):
        rows, cols = np.nonzero(sem == FLOOR)
        a, b = np.polyfit(v[rows], 1.0 / depth[rows, cols], 1)
        obj_r, obj_c = np.nonzero(sem >= 2)
        inv_floor = a * v[obj_r] + b
        floor_depth = np.where(inv_floor > 0, 1.0 / np.maximum(inv_floor, 1e-9), np.inf)
        assert np.all(depth[obj_r, obj_c] <= np.minimum(floor_depth, depth.max()) + 1e-4)


def test_rgb_follows_the_geometry(scenes):
    """The wall (flat, one colour, one depth) is uniform in RGB up to the pixel noise,
    and RGB changes across the semantic boundaries more than inside the wall."""
    noise = SceneConfig().noise
    for rgb, sem in zip(scenes.rgb, scenes.semantic, strict=True):
        wall = rgb[:, sem == WALL]
        assert wall.std(axis=1).max() < 2.5 * noise
    clean = generate_scenes(16, SceneConfig(noise=0.0), seed=4)
    for rgb, sem in zip(clean.rgb, clean.semantic, strict=True):
        assert np.ptp(rgb[:, sem == WALL], axis=1).max() < 1e-5
        edge = sem[:, 1:] != sem[:, :-1]
        jump = np.abs(rgb[:, :, 1:] - rgb[:, :, :-1]).sum(axis=0)
        assert jump[edge].mean() > 5 * max(jump[~edge & (sem[:, 1:] == WALL)].mean(), 1e-6)


def test_label_is_the_dominant_object_class(scenes):
    for sem, label in zip(scenes.semantic, scenes.label, strict=True):
        counts = [(sem == 2 + j).sum() for j in range(len(OBJECT_CLASSES))]
        assert max(counts) > 0
        assert label == int(np.argmax(counts))
    # all classes occur in a modest sample
    assert set(generate_scenes(200, seed=0).label) == set(range(len(OBJECT_CLASSES)))


def test_scene_labels_hand_computed():
    sem = np.array([[[0, 2, 2], [1, 3, 3], [3, 1, 0]], [[0, 0, 0], [1, 1, 1], [5, 4, 4]]])
    np.testing.assert_array_equal(scene_labels_from_semantic(sem), [1, 2])
    with pytest.raises(ValueError, match="semantic"):
        scene_labels_from_semantic(np.zeros((3, 3)))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"size": 4}, "size"),
        ({"max_objects": 0}, "max_objects"),
        ({"noise": -0.1}, "noise"),
        ({"wall_distance": (9.0, 6.0)}, "wall_distance"),
        ({"camera_height": (0.0, 1.0)}, "camera_height"),
    ],
)
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SceneConfig(**kwargs)


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_scenes"):
        generate_scenes(0)
    with pytest.raises(ValueError, match="seed"):
        generate_scenes(2, seed=-1)
    with pytest.raises(TypeError, match="config"):
        generate_scenes(2, config={"size": 16})  # type: ignore[arg-type]
