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


_CHUNK = 256  # scenes rendered at a time (bounds memory; results do not depend on it)
_CYL = 0.65  # cylinder half-width in object radii


def _draw(n: int, cfg: SceneConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Every random quantity of ``n`` scenes, drawn up front (float32 / int64 arrays)."""
    k, f32 = cfg.max_objects, np.float32
    d: dict[str, np.ndarray] = {
        "horizon": rng.uniform(-0.45, -0.05, n),
        "height": rng.uniform(*cfg.camera_height, n),
        "wall": rng.uniform(*cfg.wall_distance, n),
        "count": rng.integers(1, k + 1, n),
        "cls": rng.integers(0, len(OBJECT_CLASSES), (n, k)),
        # object 0 is the near "main" object, the others stand further back
        "z0": np.concatenate(
            [rng.uniform(1.4, 2.2, (n, 1)), rng.uniform(2.4, 5.0, (n, k - 1))], axis=1
        ),
        "s": np.concatenate(
            [rng.uniform(0.6, 0.95, (n, 1)), rng.uniform(0.35, 0.7, (n, k - 1))], axis=1
        ),
        "u0": rng.uniform(-0.8, 0.8, (n, k)),
        "hue": rng.uniform(0.0, 1.0, (n, k)),
        "sat": rng.uniform(0.45, 0.95, (n, k)),
        "val": rng.uniform(0.65, 1.0, (n, k)),
        "tex_kind": rng.integers(0, 4, (n, k)),
        "tex_freq": rng.uniform(2.0, 4.0, (n, k)),
        "azimuth": rng.uniform(-0.9, 0.9, n),
        "elevation": rng.uniform(0.3, 0.9, n),
        "tile": rng.uniform(0.6, 1.2, n),
        "floor_dark": rng.uniform(0.55, 0.8, n),
    }
    for name, (lo, hi) in zip(("wall_h", "wall_s", "wall_v"), _WALL_HSV, strict=True):
        d[name] = rng.uniform(lo, hi, n)
    for name, (lo, hi) in zip(("floor_h", "floor_s", "floor_v"), _FLOOR_HSV, strict=True):
        d[name] = rng.uniform(lo, hi, n)
    return {key: v.astype(f32) if v.dtype.kind == "f" else v for key, v in d.items()}


def _render(
    d: dict[str, np.ndarray], cfg: SceneConfig, noise_rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RGB ``(n, 3, H, W)``, depth ``(n, H, W)`` and semantic ``(n, H, W)`` of drawn scenes."""
    k = d["cls"].shape[1]
    size = cfg.size
    f32 = np.float32
    axis = ((np.arange(size, dtype=f32) + 0.5) / size * 2.0 - 1.0).astype(f32)
    u = axis[None, None, :]  # (1, 1, W)
    v = axis[None, :, None]  # (1, H, 1)
    col = lambda a: a[:, None, None]  # noqa: E731  (n,) -> (n, 1, 1)

    # --- room: floor plane z = h / (v - v_h) below the horizon, wall at distance D ----------
    below = v - col(d["horizon"])
    floor_z = np.where(below > 1e-6, col(d["height"]) / np.maximum(below, 1e-6), np.inf)
    is_floor = floor_z < col(d["wall"])
    bg_z = np.where(is_floor, floor_z, col(d["wall"])).astype(f32)  # (n, H, W)

    # --- objects: every object's front surface, then a z-buffer ----------------------------
    z0, s = d["z0"], d["s"]
    r = s / z0
    v0 = d["horizon"][:, None] + d["height"][:, None] / z0 - r  # centre: base on the floor
    ex = lambda a: a[:, :, None, None]  # noqa: E731  (n, K) -> (n, K, 1, 1)
    du = (u[:, None] - ex(d["u0"])) / ex(r)  # (n, K, 1, W), in object radii
    dv = (v[:, None] - ex(v0)) / ex(r)  # (n, K, H, 1)
    c = ex(d["cls"])
    present = ex(np.arange(k)[None, :] < d["count"][:, None])
    adu, adv = np.abs(du), np.abs(dv)
    rho2 = du * du + dv * dv
    inside = present & np.select(
        [c == 0, c == 1, c == 2],
        [rho2 < 1.0, (adu < 1.0) & (adv < 1.0), (adu < _CYL) & (adv < 1.0)],
        (adu < (dv + 1.0) / 2.0) & (dv < 1.0),
    )
    bulge = np.select(
        [c == 0, c == 1, c == 2],
        [
            np.sqrt(np.clip(1.0 - rho2, 0.0, 1.0)),
            np.ones_like(rho2),
            _CYL * np.sqrt(np.clip(1.0 - (du / _CYL) ** 2, 0.0, 1.0)),
        ],
        0.5 * (1.0 - adu),
    )
    obj_z = np.where(inside, ex(z0) - ex(s) * bulge, np.inf).astype(f32)
    nearest = np.argmin(obj_z, axis=1)  # (n, H, W)
    near_z = np.take_along_axis(obj_z, nearest[:, None], axis=1)[:, 0]
    hit = near_z < bg_z
    depth = np.where(hit, near_z, bg_z).astype(f32)

    # --- per pixel, the visible object's parameters (work on (n, H, W) from here) ----------
    def pick(a: np.ndarray) -> np.ndarray:
        return np.take_along_axis(a[:, :, None, None], nearest[:, None], axis=1)[:, 0]

    cls_p = np.where(hit, pick(d["cls"]), -1)
    semantic = np.where(hit, cls_p + _FIRST_OBJECT, is_floor.astype(np.int64)).astype(np.int64)
    r_p = pick(r)
    a = (u - pick(d["u0"])) / r_p  # local coordinates of the visible object
    b = (v - pick(v0)) / r_p
    zero, one = np.zeros_like(a), np.ones_like(a)
    sph = np.sqrt(np.clip(1.0 - a * a - b * b, 0.0, 1.0))
    cyl = np.sqrt(np.clip(1.0 - (a / _CYL) ** 2, 0.0, 1.0))
    # camera frame: x right, y down, z forward; visible surfaces face the camera (n_z < 0)
    conds = [cls_p == 0, cls_p == 1, cls_p == 2, cls_p == 3, is_floor]
    nx = np.select(conds, [a, zero, a / _CYL, 0.5 * np.sign(a), zero], zero)
    ny = np.select(conds, [b, zero, zero, -0.45 * one, -one], zero)
    nz = np.select(conds, [-sph, -one, -cyl, -0.75 * one, zero], -one)
    norm = np.maximum(np.sqrt(nx * nx + ny * ny + nz * nz), 1e-6)
    el, az = d["elevation"], d["azimuth"]
    light = np.stack([np.sin(az) * np.cos(el), -np.sin(el), -np.cos(az)], axis=1)
    light /= np.linalg.norm(light, axis=1, keepdims=True)
    lambert = (nx * col(light[:, 0]) + ny * col(light[:, 1]) + nz * col(light[:, 2])) / norm
    shade = 0.3 + 0.7 * np.clip(lambert, 0.0, 1.0)

    # --- albedo: textured objects, checkered floor, plain wall ------------------------------
    obj_rgb = _hsv_to_rgb(d["hue"], d["sat"], d["val"])  # (n, K, 3)
    obj_albedo = (
        np.take_along_axis(obj_rgb[:, :, None, None, :], nearest[:, None, :, :, None], axis=1)[:, 0]
        * _texture(pick(d["tex_kind"]), a, b, pick(d["tex_freq"]))[..., None]
    )
    wall_rgb = _hsv_to_rgb(d["wall_h"], d["wall_s"], d["wall_v"])[:, None, None]
    floor_a = _hsv_to_rgb(d["floor_h"], d["floor_s"], d["floor_v"])[:, None, None]
    floor_b = floor_a * d["floor_dark"][:, None, None, None]
    fz = np.where(is_floor, floor_z, 0.0)
    tile = col(d["tile"])
    check = (np.floor(u * fz / tile) + np.floor(fz / tile)) % 2 == 0
    floor_rgb = np.where(check[..., None], floor_a, floor_b)
    albedo = np.where(
        hit[..., None], obj_albedo, np.where(is_floor[..., None], floor_rgb, wall_rgb)
    )
    rgb = albedo * (shade / (1.0 + 0.04 * depth))[..., None]
    if cfg.noise > 0:
        rgb = rgb + cfg.noise * noise_rng.standard_normal(rgb.shape, dtype=f32)
    rgb = np.clip(rgb, 0.0, 1.0).astype(f32).transpose(0, 3, 1, 2)
    return np.ascontiguousarray(rgb), depth, semantic


def generate_scenes(num_scenes: int, config: SceneConfig | None = None, seed: int = 0) -> Scenes:
    """Render ``num_scenes`` scenes (vectorised over scenes, objects and pixels).

    The same ``(num_scenes, config, seed)`` gives the same arrays on every machine, and
    the first ``m`` scenes of ``n`` are those of ``m`` when ``m`` is a multiple of 256.
    """
    if isinstance(num_scenes, bool) or not isinstance(num_scenes, int) or num_scenes < 1:
        raise ValueError(f"num_scenes must be an integer >= 1, got {num_scenes!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    cfg = config or SceneConfig()
    if not isinstance(cfg, SceneConfig):
        raise TypeError(f"config must be a SceneConfig, got {type(cfg).__name__}")
    params = _draw(num_scenes, cfg, np.random.default_rng(seed))
    parts = [
        _render(
            {key: val[i : i + _CHUNK] for key, val in params.items()},
            cfg,
            np.random.default_rng([seed, i // _CHUNK]),
        )
        for i in range(0, num_scenes, _CHUNK)
    ]
    rgb, depth, semantic = (np.concatenate(x) for x in zip(*parts, strict=True))
    return Scenes(
        rgb=rgb,
        depth=depth[:, None],
        semantic=semantic,
        label=scene_labels_from_semantic(semantic),
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
