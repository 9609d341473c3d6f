"""Procedural multi-modal scenes: RGB, depth and a semantic map rendered from one geometry.

A pinhole camera (focal length 1, image coordinates ``u, v`` in ``[-1, 1]``, ``v`` down)
at height ``h`` looks horizontally into a room: a back wall at distance ``D`` and a floor.
The floor row ``v`` below the horizon ``v_h`` lies at depth ``z = h / (v - v_h)``; the wall
covers the rest. Up to ``max_objects`` objects stand on the floor, each of one class:

============  ==========================================================================
class         front surface at offset ``(du, dv)`` from the object's centre, screen radius r
============  ==========================================================================
sphere        ``du^2 + dv^2 < r^2``; ``z = z0 - s sqrt(1 - (du^2 + dv^2)/r^2)``
box           ``|du|, |dv| < r``; flat face ``z = z0 - s``
cylinder      ``|du| < 0.65 r``, ``|dv| < r``; ``z = z0 - 0.65 s sqrt(1 - du^2/(0.65 r)^2)``
cone          triangle ``|du| < (dv + r)/2``; ``z = z0 - s (1 - |du|/r) / 2``
============  ==========================================================================

with world radius ``s``, screen radius ``r = s / z0`` and the base on the floor
(``v_c + r = v_h + h / z0``). A z-buffer (per-pixel minimum over the floor, the wall and
every object) gives the depth map and the semantic map (``0`` wall, ``1`` floor,
``2 + class`` for objects) from the same geometry, so the modalities agree by construction.
RGB is Lambertian shading of the same surfaces (normals from each surface's depth
function, a random light per scene, 30% ambient) times a per-object albedo (random hue,
random texture: plain, checker or stripes, independent of the class, so the class is a
matter of shape), a perspective-correct floor checker, a distance fall-off
``1 / (1 + 0.04 z)`` and Gaussian pixel noise.

The scene-level class label is the object class with the largest visible area in the
semantic map (ties to the smaller class index).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

__all__ = [
    "OBJECT_CLASSES",
    "SEGMENT_CLASSES",
    "SceneConfig",
    "Scenes",
    "generate_scenes",
    "scene_labels_from_semantic",
]

OBJECT_CLASSES: tuple[str, ...] = ("sphere", "box", "cylinder", "cone")
SEGMENT_CLASSES: tuple[str, ...] = ("wall", "floor", *OBJECT_CLASSES)
_FIRST_OBJECT = 2  # semantic id of OBJECT_CLASSES[0]


@dataclass(frozen=True)
class Scenes:
    """A batch of scenes (numpy arrays, channels first).

    ``rgb``: float32 ``(N, 3, H, W)`` in ``[0, 1]``. ``depth``: float32 ``(N, 1, H, W)`` in
    metres (``> 0``; ``0`` marks a missing value in real data). ``semantic``: int64
    ``(N, H, W)`` with ids in ``[0, num_classes)``, ``-1`` for unlabelled pixels.
    ``label``: int64 ``(N,)`` scene class. ``class_names``: names of the semantic ids;
    ``label_names``: names of the scene classes. ``max_depth``: the depth that maps to 1
    when the depth modality is normalised.
    """

    rgb: np.ndarray
    depth: np.ndarray
    semantic: np.ndarray
    label: np.ndarray
    class_names: tuple[str, ...]
    label_names: tuple[str, ...]
    max_depth: float

    def __len__(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def subset(self, index: np.ndarray | slice) -> Scenes:
        """The scenes at ``index`` (any numpy index along the first axis)."""
        return replace(
            self,
            rgb=self.rgb[index],
            depth=self.depth[index],
            semantic=self.semantic[index],
            label=self.label[index],
        )


@dataclass(frozen=True)
class SceneConfig:
    """Rendering parameters. ``size``: image side in pixels; ``max_objects``: objects per
    scene are drawn uniformly from ``1..max_objects``; ``noise``: std of the RGB pixel noise;
    ``wall_distance``: range of the back wall's distance in metres."""

    size: int = 32
    max_objects: int = 4
    noise: float = 0.02
    wall_distance: tuple[float, float] = (6.0, 9.0)
    camera_height: tuple[float, float] = (1.0, 1.6)

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 8:
            raise ValueError(f"size must be an integer >= 8, got {self.size!r}")
        if (
            isinstance(self.max_objects, bool)
            or not isinstance(self.max_objects, int)
            or not 1 <= self.max_objects <= 16
        ):
            raise ValueError(f"max_objects must be an integer in [1, 16], got {self.max_objects!r}")
        if not (isinstance(self.noise, int | float) and 0.0 <= self.noise <= 0.5):
            raise ValueError(f"noise must be a number in [0, 0.5], got {self.noise!r}")
        lo, hi = self.wall_distance
        if not 4.0 <= lo <= hi <= 50.0:
            raise ValueError(f"wall_distance must satisfy 4 <= low <= high <= 50, got {(lo, hi)}")
        lo, hi = self.camera_height
        if not 0.2 <= lo <= hi <= 5.0:
            raise ValueError(f"camera_height must satisfy 0.2 <= low <= high <= 5, got {(lo, hi)}")

    @property
    def max_depth(self) -> float:
        return float(self.wall_distance[1])


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB; inputs of one shape, output with a trailing axis of 3."""
    k = (np.stack([5.0 + 0 * h, 3.0 + 0 * h, 1.0 + 0 * h], axis=-1) + h[..., None] * 6.0) % 6.0
    return v[..., None] - v[..., None] * s[..., None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def _texture(kind: np.ndarray, a: np.ndarray, b: np.ndarray, freq: np.ndarray) -> np.ndarray:
    """Texture factor in ``[0.55, 1]`` at local coordinates ``a, b`` (object units).

    ``kind`` 0 plain, 1 checker, 2 vertical stripes, 3 horizontal stripes.
    """
    checker = ((np.floor(a * freq) + np.floor(b * freq)) % 2 == 0).astype(np.float32)
    vstripe = (np.floor(a * freq) % 2 == 0).astype(np.float32)
    hstripe = (np.floor(b * freq) % 2 == 0).astype(np.float32)
    pattern = np.select([kind == 1, kind == 2, kind == 3], [checker, vstripe, hstripe], 1.0)
    return 0.55 + 0.45 * pattern


def generate_scenes(num_scenes: int, config: SceneConfig | None = None, seed: int = 0) -> Scenes:
    """Render ``num_scenes`` scenes (vectorised over scenes, objects and pixels).

    The same ``(num_scenes, config, seed)`` gives the same arrays on every machine.
    """
    if isinstance(num_scenes, bool) or not isinstance(num_scenes, int) or num_scenes < 1:
        raise ValueError(f"num_scenes must be an integer >= 1, got {num_scenes!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    cfg = config or SceneConfig()
    if not isinstance(cfg, SceneConfig):
        raise TypeError(f"config must be a SceneConfig, got {type(cfg).__name__}")
    rng = np.random.default_rng(seed)
    n, k, size = num_scenes, cfg.max_objects, cfg.size
    f32 = np.float32

    # --- camera and room (per scene), shapes (N, 1, 1) -----------------------------------
    axis = (np.arange(size, dtype=f32) + 0.5) / size * 2.0 - 1.0
    u = axis[None, None, :]  # (1, 1, W)
    v = axis[None, :, None]  # (1, H, 1)
    horizon = rng.uniform(-0.45, -0.05, (n, 1, 1)).astype(f32)
    height = rng.uniform(*cfg.camera_height, (n, 1, 1)).astype(f32)
    wall = rng.uniform(*cfg.wall_distance, (n, 1, 1)).astype(f32)
    below = v - horizon
    floor_z = np.where(below > 1e-6, height / np.maximum(below, 1e-6), np.inf)
    is_floor = floor_z < wall
    bg_z = np.where(is_floor, floor_z, wall).astype(f32)  # (N, H, W)
    bg_class = is_floor.astype(np.int64)

    # --- objects (N, K) -------------------------------------------------------------------
    count = rng.integers(1, k + 1, n)
    present = np.arange(k)[None, :] < count[:, None]
    cls = rng.integers(0, len(OBJECT_CLASSES), (n, k))
    z0 = rng.uniform(1.6, 4.5, (n, k)).astype(f32)
    s = rng.uniform(0.4, 0.9, (n, k)).astype(f32)
    r = s / z0
    u0 = rng.uniform(-0.8, 0.8, (n, k)).astype(f32)
    v_base = horizon[:, :, 0] + height[:, :, 0] / z0
    v0 = v_base - r
    hue = rng.uniform(0.0, 1.0, (n, k)).astype(f32)
    sat = rng.uniform(0.45, 0.95, (n, k)).astype(f32)
    val = rng.uniform(0.65, 1.0, (n, k)).astype(f32)
    tex_kind = rng.integers(0, 4, (n, k))
    tex_freq = rng.uniform(2.0, 4.0, (n, k)).astype(f32)

    ex = lambda a: a[:, :, None, None]  # noqa: E731  (N, K) -> (N, K, 1, 1)
    du = (u[:, None] - ex(u0)) / ex(r)  # (N, K, 1, W), in object radii
    dv = (v[:, None] - ex(v0)) / ex(r)  # (N, K, H, 1)
    du, dv = np.broadcast_arrays(du, dv)
    c = ex(cls)
    s4, z4 = ex(s), ex(z0)
    rho2 = du * du + dv * dv
    cyl = 0.65
    inside = np.select(
        [c == 0, c == 1, c == 2, c == 3],
        [
            rho2 < 1.0,
            (np.abs(du) < 1.0) & (np.abs(dv) < 1.0),
            (np.abs(du) < cyl) & (np.abs(dv) < 1.0),
            (np.abs(du) < (dv + 1.0) / 2.0) & (dv < 1.0),
        ],
        False,
    ) & ex(present)
    bulge_sphere = np.sqrt(np.clip(1.0 - rho2, 0.0, 1.0))
    bulge_cyl = np.sqrt(np.clip(1.0 - (du / cyl) ** 2, 0.0, 1.0))
    obj_z = z4 - s4 * np.select(
        [c == 0, c == 1, c == 2],
        [bulge_sphere, np.ones_like(du), cyl * bulge_cyl],
        0.5 * (1.0 - np.abs(du)),
    )
    obj_z = np.where(inside, obj_z, np.inf).astype(f32)

    # --- z-buffer ---------------------------------------------------------------------------
    nearest = np.argmin(obj_z, axis=1)  # (N, H, W)
    near_z = np.take_along_axis(obj_z, nearest[:, None], axis=1)[:, 0]
    hit = near_z < bg_z
    depth = np.where(hit, near_z, bg_z).astype(f32)
    near_cls = np.take_along_axis(np.broadcast_to(c, obj_z.shape), nearest[:, None], axis=1)[:, 0]
    semantic = np.where(hit, near_cls + _FIRST_OBJECT, bg_class).astype(np.int64)

    # --- normals (camera frame: x right, y down, z forward; visible normals have n_z < 0) --
    def pick(a: np.ndarray) -> np.ndarray:
        a = np.broadcast_to(a, obj_z.shape)
        return np.take_along_axis(a, nearest[:, None], axis=1)[:, 0]

    sphere_n = (du, dv, -bulge_sphere)
    cyl_n = (du / cyl, np.zeros_like(du), -bulge_cyl)
    cone_n = (0.5 * np.sign(du), np.full_like(du, -0.45), np.full_like(du, -0.75))
    box_n = (np.zeros_like(du), np.zeros_like(du), -np.ones_like(du))
    obj_n = [
        pick(np.select([c == 0, c == 1, c == 2], [sn, bn, cn], kn))
        for sn, bn, cn, kn in zip(sphere_n, box_n, cyl_n, cone_n, strict=True)
    ]
    floor_n = (0.0, -1.0, 0.0)
    wall_n = (0.0, 0.0, -1.0)
    normal = np.stack(
        [
            np.where(hit, on, np.where(is_floor, fn, wn))
            for on, fn, wn in zip(obj_n, floor_n, wall_n, strict=True)
        ],
        axis=1,
    ).astype(f32)
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-6)

    # light comes from the camera side, above, left or right: direction towards the light
    azimuth = rng.uniform(-0.9, 0.9, n)
    elevation = rng.uniform(0.3, 0.9, n)
    to_light = np.stack(
        [np.sin(azimuth) * np.cos(elevation), -np.sin(elevation), -np.cos(azimuth)], axis=1
    ).astype(f32)
    to_light /= np.linalg.norm(to_light, axis=1, keepdims=True)
    lambert = np.clip(np.einsum("nchw,nc->nhw", normal, to_light), 0.0, 1.0)
    shade = 0.3 + 0.7 * lambert

    # --- albedo -------------------------------------------------------------------------------
    obj_rgb = _hsv_to_rgb(hue, sat, val)  # (N, K, 3)
    tex = _texture(ex(tex_kind), du, dv, ex(tex_freq))
    obj_albedo = (
        pick(tex)[..., None]
        * np.take_along_axis(obj_rgb[:, :, None, None, :], nearest[:, None, :, :, None], axis=1)[
            :, 0
        ]
    )
    wall_rgb = _hsv_to_rgb(*(rng.uniform(lo, hi, n).astype(f32) for lo, hi in _WALL_HSV))
    floor_a = _hsv_to_rgb(*(rng.uniform(lo, hi, n).astype(f32) for lo, hi in _FLOOR_HSV))
    floor_b = floor_a * rng.uniform(0.55, 0.8, (n, 1)).astype(f32)
    world_x = u * np.where(is_floor, floor_z, 0.0)
    tile = rng.uniform(0.6, 1.2, (n, 1, 1)).astype(f32)
    check = (np.floor(world_x / tile) + np.floor(np.where(is_floor, floor_z, 0.0) / tile)) % 2
    floor_rgb = np.where(check[..., None] == 0, floor_a[:, None, None], floor_b[:, None, None])
    albedo = np.where(
        hit[..., None],
        obj_albedo,
        np.where(is_floor[..., None], floor_rgb, wall_rgb[:, None, None]),
    )
    falloff = 1.0 / (1.0 + 0.04 * depth)
    rgb = albedo * (shade * falloff)[..., None]
    rgb = rgb + rng.normal(0.0, cfg.noise, rgb.shape)
    rgb = np.clip(rgb, 0.0, 1.0).astype(f32).transpose(0, 3, 1, 2)

    label = scene_labels_from_semantic(semantic)
    return Scenes(
        rgb=np.ascontiguousarray(rgb),
        depth=depth[:, None],
        semantic=semantic,
        label=label,
        class_names=SEGMENT_CLASSES,
        label_names=OBJECT_CLASSES,
        max_depth=cfg.max_depth,
    )


_WALL_HSV = ((0.0, 1.0), (0.05, 0.3), (0.55, 0.85))
_FLOOR_HSV = ((0.0, 1.0), (0.1, 0.4), (0.45, 0.75))


def scene_labels_from_semantic(semantic: np.ndarray) -> np.ndarray:
    """Scene class: the object class with the most pixels in each semantic map.

    ``semantic``: int ``(N, H, W)`` with object classes at ids ``2 ..`` (wall 0, floor 1).
    Ties go to the smaller class index; a map without any object pixel gets class 0.
    """
    semantic = np.asarray(semantic)
    if semantic.ndim != 3 or not np.issubdtype(semantic.dtype, np.integer):
        raise ValueError(f"semantic must be an integer array (N, H, W), got {semantic.shape}")
    n = semantic.shape[0]
    flat = semantic.reshape(n, -1)
    counts = np.stack(
        [(flat == _FIRST_OBJECT + j).sum(axis=1) for j in range(len(OBJECT_CLASSES))], axis=1
    )
    return np.argmax(counts, axis=1).astype(np.int64)
