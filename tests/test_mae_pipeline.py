"""The experiment end to end on tiny settings: pipeline, CLI (procedural and user data),
figures, and the GPU script's CPU smoke mode."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deep.apps.finetune import IMAGE_FINETUNE
from deep.apps.mae.pipeline import DOWNSTREAM_TASKS, PipelineConfig, run_pipeline, split_scenes
from deep.apps.mae.scenes import SceneConfig, generate_scenes

ROOT = Path(__file__).resolve().parents[1]

TINY = dict(
    image=16, patch_size=8, dim=16, depth=1, heads=2, decoder_dim=16,
    num_pretrain=48, num_train=24, num_test=24,
    pretrain_steps=3, batch_size=16, finetune_steps=2, dense_finetune=False, seeds=(0, 1, 2),
)  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _tiny_config(**kw) -> PipelineConfig:
    base = dict(
        scene=SceneConfig(size=16), patch_size=8, dim=16, depth=1, heads=2, decoder_dim=16,
        num_pretrain=48, num_train=24, num_test=24, pretrain_steps=3, batch_size=16,
        warmup_steps=1, seeds=(0, 1), finetune=replace(IMAGE_FINETUNE, steps=2, batch_size=12),
        device="cpu",
    )  # fmt: skip
    base.update(kw)
    return PipelineConfig(**base)


def test_run_pipeline_structure():
    cfg = _tiny_config()
    res = run_pipeline(cfg, log=lambda s: None)
    assert set(res.metrics) == {"minimax", "average", "scratch"}
    for rows in res.metrics.values():
        assert len(rows) == 2
        for row in rows:
            assert 0 <= row["cls_linear_acc"] <= 1 and 0 <= row["segmentation_miou"] <= 1
            assert row["depth_rmse"] > 0 and 0 <= row["depth_delta1"] <= 1
    for task in DOWNSTREAM_TASKS:
        assert np.mean(res.scores["scratch"][task]) == pytest.approx(0.0, abs=1e-12)
    for method in ("minimax", "average"):
        h = res.histories[method][0]
        assert h["task_losses"].shape[1] == 3 and h["weights"].shape == h["task_losses"].shape
        np.testing.assert_allclose(h["weights"].sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(res.histories["average"][0]["weights"], 1 / 3, rtol=1e-5)
    assert all(len(v) == 3 for rows in res.heldout.values() for v in rows)
    assert set(res.reconstructions) == {"minimax", "average", "scratch"}
    rec = res.reconstructions["minimax"]
    assert rec["rgb_recon"].shape == (4, 3, 16, 16) and rec["semantic_recon"].shape == (4, 16, 16)
    assert np.isnan(rec["rgb_input"]).any()  # hidden patches are blank in the input


def test_same_seed_same_start_for_every_method():
    """Scratch, minimax and average of one seed start from the same weights, so the
    scratch row is the pre-training methods' own starting point; the run repeats."""
    cfg = _tiny_config(seeds=(5,))
    a = run_pipeline(cfg, log=lambda s: None)
    b = run_pipeline(cfg, log=lambda s: None)
    assert a.metrics == b.metrics
    h = a.histories
    np.testing.assert_allclose(
        h["minimax"][0]["task_losses"][0], h["average"][0]["task_losses"][0], rtol=1e-5
    )


def test_split_and_config_errors():
    s = generate_scenes(10, SceneConfig(size=16), seed=0)
    parts = split_scenes(s, (5, 3, 2), seed=0)
    assert [len(p) for p in parts] == [5, 3, 2]
    with pytest.raises(ValueError, match="need 11 scenes"):
        split_scenes(s, (5, 3, 3), seed=0)
    with pytest.raises(ValueError, match="batch_size"):
        _tiny_config(batch_size=100)
    with pytest.raises(ValueError, match="seeds"):
        _tiny_config(seeds=(1, 1))
    with pytest.raises(ValueError, match="temperature"):
        _tiny_config(temperature=0.0)


@pytest.fixture
def tiny_demo(monkeypatch):
    from benchmarks.experiments import mae

    monkeypatch.setitem(mae.PRESETS, "demo", dict(TINY))
    return mae


def test_cli_demo_writes_json_and_figures(tiny_demo, tmp_path):
    from benchmarks.__main__ import main

    assert main(["run", "mae", "--demo", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "mae.json").read_text())
    wc = data["worst_case"]
    assert set(wc["methods"]) == {"minimax", "average", "scratch"}
    assert "rer_wg" in wc["methods"]["minimax"]["mean"]
    assert len(wc["methods"]["minimax"]["per_seed"]["rer_wg"]) == 3
    for name in ("mae.png", "mae_losses.png", "mae_recon.png"):
        with Image.open(tmp_path / name) as img:
            assert img.size[0] > 300
    assert not list(tmp_path.glob(".*tmp"))


def _write_rgbd(root: Path, n: int) -> None:
    s = generate_scenes(n, SceneConfig(size=16), seed=7)
    for sub in ("rgb", "depth", "label"):
        (root / sub).mkdir(parents=True)
    for i in range(n):
        rgb = (s.rgb[i].transpose(1, 2, 0) * 255).round().astype(np.uint8)
        Image.fromarray(rgb).save(root / "rgb" / f"{i:03d}.png")
        Image.fromarray((s.depth[i, 0] * 1000).round().astype(np.uint16)).save(
            root / "depth" / f"{i:03d}.png"
        )
        Image.fromarray((s.semantic[i] + 1).astype(np.uint8)).save(root / "label" / f"{i:03d}.png")


def test_cli_user_data(tiny_demo, tmp_path):
    from benchmarks.__main__ import main

    _write_rgbd(tmp_path / "nyu", 30)
    rng = np.random.default_rng(0)
    for k, name in enumerate(("bright", "dark")):
        (tmp_path / "cls" / name).mkdir(parents=True)
        for i in range(6):
            value = np.clip(rng.normal(130 - 10 * k, 60, (20, 20, 3)), 0, 255)
            Image.fromarray(value.astype(np.uint8)).save(tmp_path / "cls" / name / f"{i}.png")
    out = tmp_path / "out"
    argv = ["run", "mae", "--demo", "--data", str(tmp_path / "nyu"), "--out", str(out)]
    assert main([*argv, "--cls-data", str(tmp_path / "cls"), "--seeds", "2"]) == 0
    data = json.loads((out / "mae.json").read_text())
    assert data["config"]["num_pretrain"] == 18 and data["config"]["num_test"] == 6
    assert data["label_names"] == ["bright", "dark"]
    assert data["class_names"][0] == "class_0"


def test_cli_bad_data_leaves_nothing(tiny_demo, tmp_path):
    from benchmarks.__main__ import main

    out = tmp_path / "out"
    with pytest.raises(ValueError, match="missing folder"):
        main(["run", "mae", "--demo", "--data", str(tmp_path / "none"), "--out", str(out)])
    assert not out.exists() or not any(out.iterdir())
    with pytest.raises(ValueError, match="--seeds"):
        main(["run", "mae", "--demo", "--seeds", "0", "--out", str(out)])


def test_gpu_script_smoke(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("mae_large", ROOT / "gpu" / "mae_large.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--smoke", "--out", str(tmp_path), "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    last = printed.strip().splitlines()
    assert any("rer_wg" in line or "worst task (rer)" in line for line in last[-8:])
    data = json.loads((tmp_path / "mae_large.json").read_text())
    assert data["config"]["pretrain_steps"] == 4
    assert set(data["worst_case"]["methods"]) == {"minimax", "average", "scratch"}
