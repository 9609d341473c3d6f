"""Masking, patches, the multi-modal MAE and its per-modality losses."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import deep
from deep.apps.mae.masking import modality_counts, num_visible, random_mask
from deep.apps.mae.model import (
    MODALITIES,
    MAEConfig,
    MAEOutput,
    MultiModalMAE,
    Normalisation,
    patchify,
    unpatchify,
)
from deep.apps.mae.scenes import SceneConfig, generate_scenes
from deep.apps.mae.tasks import MAEBatch, SceneBatches, modality_task_loss, per_patch_losses

SIZE, PATCH = 16, 4
P = (SIZE // PATCH) ** 2


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def scenes():
    return generate_scenes(24, SceneConfig(size=SIZE), seed=0)


def _model(seed: int = 0, **kw) -> MultiModalMAE:
    torch.manual_seed(seed)
    cfg = dict(image_size=SIZE, patch_size=PATCH, dim=32, depth=1, heads=2, decoder_dim=16)
    cfg.update(kw)
    return MultiModalMAE(MAEConfig(**cfg)).eval()


def _batch(scenes, mask: np.ndarray) -> MAEBatch:
    n = mask.shape[0]
    return MAEBatch(
        torch.from_numpy(scenes.rgb[:n]),
        torch.from_numpy(scenes.depth[:n]),
        torch.from_numpy(scenes.semantic[:n]),
        torch.from_numpy(mask),
    )


# --- masking ---------------------------------------------------------------------------
@given(
    batch=st.integers(1, 8),
    tokens=st.integers(2, 200),
    ratio=st.floats(0.01, 0.99),
    seed=st.integers(0, 2**31),
)
def test_random_mask_hides_the_same_count_per_row(batch, tokens, ratio, seed):
    hidden = round(ratio * tokens)
    if not 1 <= hidden <= tokens - 1:
        with pytest.raises(ValueError, match="mask_ratio"):
            random_mask(batch, tokens, ratio, np.random.default_rng(seed))
        return
    mask = random_mask(batch, tokens, ratio, np.random.default_rng(seed))
    assert mask.shape == (batch, tokens) and mask.dtype == bool
    np.testing.assert_array_equal(mask.sum(axis=1), hidden)
    assert num_visible(tokens, ratio) == tokens - hidden


def test_random_mask_is_uniform_across_modalities():
    """Each token is hidden with probability ``mask_ratio``, whatever its modality."""
    mask = random_mask(4000, 3 * 16, 0.75, np.random.default_rng(0))
    per_token = mask.mean(axis=0)
    assert np.abs(per_token - 0.75).max() < 0.035  # 5 sigma of a Bernoulli(0.75) mean
    per_modality = mask.reshape(4000, 3, 16).mean(axis=(0, 2))
    np.testing.assert_allclose(per_modality, 0.75, atol=0.01)
    # rows differ; a seed repeats
    assert len({r.tobytes() for r in mask[:50]}) == 50
    np.testing.assert_array_equal(
        random_mask(3, 10, 0.5, np.random.default_rng(1)),
        random_mask(3, 10, 0.5, np.random.default_rng(1)),
    )


def test_modality_counts_by_hand():
    shares = np.array([[0.5, 0.3, 0.2], [0.9, 0.1, 0.0], [1.0, 0.0, 0.0]])
    # 10 visible: exact 5/3/2; 9/1/0 and 10/0/0 overflow the cap of 6: the excess goes to
    # the modality with the most room (ties: the first)
    counts = modality_counts(shares, 10, 6)
    np.testing.assert_array_equal(counts, [[5, 3, 2], [6, 1, 3], [6, 4, 0]])
    # largest remainder: 7 * (0.5, 0.3, 0.2) = 3.5, 2.1, 1.4 -> 4, 2, 1
    np.testing.assert_array_equal(modality_counts(shares[:1], 7, 6), [[4, 2, 1]])
    with pytest.raises(ValueError, match="visible"):
        modality_counts(shares, 19, 6)


@given(
    batch=st.integers(1, 6),
    patches=st.integers(1, 20),
    ratio=st.floats(0.05, 0.95),
    alpha=st.floats(0.05, 5.0),
    seed=st.integers(0, 2**31),
)
def test_dirichlet_mask_counts(batch, patches, ratio, alpha, seed):
    tokens = 3 * patches
    hidden = round(ratio * tokens)
    if not 1 <= hidden <= tokens - 1:
        return
    mask = random_mask(batch, tokens, ratio, np.random.default_rng(seed), 3, alpha)
    np.testing.assert_array_equal(mask.sum(axis=1), hidden)


def test_dirichlet_mask_varies_the_modality_mix():
    """With alpha = 0.2 many samples see (almost) one modality; uniform masking never does;
    over many samples every modality is hidden equally often."""
    rng = np.random.default_rng(0)
    dirichlet = ~random_mask(2000, 3 * 16, 0.75, rng, 3, 0.2)
    uniform = ~random_mask(2000, 3 * 16, 0.75, rng)
    share = lambda vis: vis.reshape(-1, 3, 16).sum(2).max(1) / 12  # noqa: E731
    assert (share(dirichlet) >= 0.9).mean() > 0.3
    assert (share(uniform) >= 0.9).mean() < 0.01
    np.testing.assert_allclose(dirichlet.reshape(-1, 3, 16).mean(axis=(0, 2)), 0.25, atol=0.02)
    with pytest.raises(ValueError, match="alpha"):
        random_mask(2, 48, 0.75, rng, 3, 0.0)
    with pytest.raises(ValueError, match="num_modalities"):
        random_mask(2, 48, 0.75, rng, 5, 1.0)


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.5, 1.5])
def test_mask_ratio_range(ratio):
    with pytest.raises(ValueError, match=r"mask_ratio must be in \(0, 1\)"):
        random_mask(2, 10, ratio, np.random.default_rng(0))


def test_mask_bad_types():
    with pytest.raises(TypeError, match="mask_ratio"):
        num_visible(10, "0.5")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size"):
        random_mask(0, 10, 0.5, np.random.default_rng(0))


# --- patches ---------------------------------------------------------------------------
def test_patchify_layout_and_round_trip():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    p = patchify(x, 4)
    assert p.shape == (2, 4, 48)
    # patch 1 is the top-right 4x4 block; inside a patch pixels are row-major, channels last
    np.testing.assert_array_equal(p[0, 1].reshape(4, 4, 3).permute(2, 0, 1), x[0, :, :4, 4:])
    torch.testing.assert_close(unpatchify(p, 4, 3), x)


# --- model -------------------------------------------------------------------------------
def test_forward_shapes(scenes):
    model = _model()
    mask = random_mask(4, 3 * P, 0.75, np.random.default_rng(0))
    out = model_out = model(*_batch(scenes, mask))
    assert isinstance(model_out, MAEOutput)
    cfg = model.config
    for m in MODALITIES:
        assert out.predictions[m].shape == (4, P, cfg.out_features(m))
    assert out.targets["semantic"].shape == (4, P, PATCH * PATCH)
    assert out.valid["depth"].all() and out.valid["semantic"].all()
    # visible indices made on the host give the same result
    b = MAEBatch.from_arrays(scenes.rgb[:4], scenes.depth[:4], scenes.semantic[:4], mask)
    assert b.visible is not None and b.visible.shape == (4, 3 * P - round(0.75 * 3 * P))
    assert bool((b.visible.diff(dim=1) > 0).all())
    assert not bool(b.mask.gather(1, b.visible).any())
    with_visible = model(*b)
    for m in MODALITIES:
        torch.testing.assert_close(with_visible.predictions[m], out.predictions[m])
    with pytest.raises(ValueError, match="visible"):
        model(b.rgb, b.depth, b.semantic, b.mask, b.visible.int())


def test_hidden_tokens_do_not_reach_the_encoder(scenes):
    """Changing the pixels of a hidden patch leaves every prediction unchanged; changing a
    visible one does not."""
    model = _model()
    mask = random_mask(2, 3 * P, 0.6, np.random.default_rng(1))
    batch = _batch(scenes, mask)
    base = model(*batch).predictions
    hidden_rgb = int(np.nonzero(mask[0, :P])[0][0])
    visible_depth = int(np.nonzero(~mask[0, P : 2 * P])[0][0])
    grid = SIZE // PATCH

    def block(t, patch):
        r, c = divmod(patch, grid)
        return (..., slice(r * PATCH, (r + 1) * PATCH), slice(c * PATCH, (c + 1) * PATCH))

    rgb = batch.rgb.clone()
    rgb[0][block(rgb, hidden_rgb)] = 1.0 - rgb[0][block(rgb, hidden_rgb)]
    changed = model(rgb, batch.depth, batch.semantic, batch.mask).predictions
    for m in MODALITIES:
        torch.testing.assert_close(changed[m], base[m])
    depth = batch.depth.clone()
    depth[0][block(depth, visible_depth)] += 3.0
    moved = model(batch.rgb, depth, batch.semantic, batch.mask).predictions
    assert not torch.allclose(moved["rgb"][0], base["rgb"][0])


def test_forward_rejects_bad_inputs(scenes):
    model = _model()
    mask = torch.from_numpy(random_mask(2, 3 * P, 0.5, np.random.default_rng(0)))
    b = _batch(scenes, mask.numpy())
    with pytest.raises(ValueError, match="rgb must have shape"):
        model(b.rgb[:, :2], b.depth, b.semantic, mask)
    with pytest.raises(TypeError, match="semantic must be int64"):
        model(b.rgb, b.depth, b.semantic.int(), mask)
    uneven = mask.clone()
    uneven[0, int(torch.nonzero(~uneven[0])[0])] = True
    with pytest.raises(ValueError, match="same number"):
        model(b.rgb, b.depth, b.semantic, uneven)
    with pytest.raises(ValueError, match="image_size"):
        MAEConfig(image_size=30, patch_size=4)
    with pytest.raises(ValueError, match="divisible"):
        MAEConfig(dim=30, heads=4)


def test_rgb_backbone_is_the_encoder_on_rgb_tokens(scenes):
    """The downstream backbone gives what the MAE encoder gives with all RGB visible."""
    model = _model()
    rgb = torch.from_numpy(scenes.rgb[:3])
    with torch.no_grad():
        tokens = model.tokens(
            rgb, torch.from_numpy(scenes.depth[:3]), torch.from_numpy(scenes.semantic[:3])
        )
        expected = model.encoder(tokens[:, :P])
        got = model.rgb_backbone().eval()(rgb)
    torch.testing.assert_close(got, expected)
    # a copy: training it leaves the MAE alone
    bb = model.rgb_backbone()
    with torch.no_grad():
        next(bb.parameters()).add_(1.0)
    torch.testing.assert_close(model.rgb_backbone().eval()(rgb), expected)


def test_normalisation_from_data(scenes):
    n = Normalisation.from_data(scenes.rgb, scenes.depth)
    np.testing.assert_allclose(n.rgb_mean, scenes.rgb.mean(axis=(0, 2, 3)), rtol=1e-5)
    assert n.depth_std == pytest.approx(float(scenes.depth.std()), rel=1e-4)
    with pytest.raises(ValueError, match="no valid"):
        Normalisation.from_data(scenes.rgb, np.zeros_like(scenes.depth))


# --- per-modality losses ------------------------------------------------------------------
def test_per_patch_losses_by_hand():
    """Two patches per modality, one pixel of 2 per patch (p = 1 is enough for the algebra):
    only hidden patches count; invalid pixels drop out; an all-invalid patch is no item."""
    b, p, c = 1, 2, 3
    mask = torch.tensor([[True, False, True, True, False, True]])  # rgb0, depth0/1, sem1
    preds = {
        "rgb": torch.tensor([[[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]]),  # 3 values per patch
        "depth": torch.tensor([[[2.0], [5.0]]]),
        "semantic": torch.tensor([[[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]]]),
    }
    targets = {
        "rgb": torch.tensor([[[1.0, 0.0, 0.0], [9.0, 9.0, 9.0]]]),
        "depth": torch.tensor([[[1.0], [0.0]]]),
        "semantic": torch.tensor([[[1], [0]]]),
    }
    valid = {
        "rgb": torch.ones(b, p, 1, dtype=torch.bool),
        "depth": torch.tensor([[[True], [False]]]),  # depth patch 1 has no valid pixel
        "semantic": torch.tensor([[[True], [True]]]),
    }
    values, ids = per_patch_losses(MAEOutput(preds, targets, mask, valid))
    ce = -F.log_softmax(torch.tensor([2.0, 0.0, 0.0]), 0)[0]
    torch.testing.assert_close(values, torch.tensor([(0 + 4 + 9) / 3, 1.0, float(ce)]))
    np.testing.assert_array_equal(ids.numpy(), [0, 1, 2])
    means, counts = deep.task_means(values, ids, 3)
    np.testing.assert_allclose(counts.numpy(), [1, 1, 1])
    torch.testing.assert_close(means, values)
    assert preds["rgb"].shape[-1] == c


def test_task_loss_reduces_to_the_modality_means(scenes):
    """``deep.task_means`` of the per-patch losses equals each modality's mean loss over
    its hidden patches, computed directly."""
    model = _model()
    mask = random_mask(6, 3 * P, 0.75, np.random.default_rng(2))
    batch = _batch(scenes, mask)
    with torch.no_grad():
        values, ids = modality_task_loss(model, batch)
        means, counts = deep.task_means(values, ids, 3)
        out = model(*batch)
    m = torch.from_numpy(mask)
    rgb_err = (out.predictions["rgb"] - out.targets["rgb"]).square().mean(-1)
    depth_err = (out.predictions["depth"] - out.targets["depth"]).square().mean(-1)
    logits = out.predictions["semantic"].reshape(6, P, PATCH * PATCH, -1)
    sem_err = F.cross_entropy(
        logits.permute(0, 3, 1, 2), out.targets["semantic"], reduction="none"
    ).mean(-1)
    expected = [
        e[m[:, i * P : (i + 1) * P]].mean() for i, e in enumerate((rgb_err, depth_err, sem_err))
    ]
    torch.testing.assert_close(means, torch.stack(expected))
    np.testing.assert_array_equal(counts.numpy(), mask.reshape(6, 3, P).sum(axis=(0, 2)))
    # at initialisation the standardised modalities start near 1 and semantic near log C
    assert 0.3 < float(means[0]) < 3 and 0.3 < float(means[1]) < 3
    assert abs(float(means[2]) - math.log(6)) < 1.0


def test_scene_batches_are_reproducible(scenes):
    a = SceneBatches(scenes, 8, 0.75, PATCH, seed=3)
    first = [next(iter(a)) for _ in range(2)]
    torch.testing.assert_close(first[0].mask, first[1].mask)  # every iter() restarts
    it = iter(a)
    batches = [next(it) for _ in range(4)]  # 24 scenes, 8 per batch: crosses an epoch
    assert all(b.rgb.shape == (8, 3, SIZE, SIZE) for b in batches)
    assert all(int(b.mask.sum(1)[0]) == round(0.75 * 3 * P) for b in batches)
    with pytest.raises(ValueError, match="batch_size"):
        SceneBatches(scenes, 100, 0.75, PATCH)
    with pytest.raises(ValueError, match="patch_size"):
        SceneBatches(scenes, 8, 0.75, 5)
    with pytest.raises(ValueError, match="mask_ratio"):
        SceneBatches(scenes, 8, 1.0, PATCH)


@pytest.mark.parametrize("rule", ["softmax", "uniform"])
def test_pretrain_lowers_every_modality_loss(scenes, rule):
    """A short ``deep.pretrain`` run lowers each modality's held-out loss."""
    import minimax_core as mc
    from deep.apps.mae.pipeline import heldout_losses

    model = _model(seed=1).train()
    held = _batch(scenes, random_mask(24, 3 * P, 0.75, np.random.default_rng(9)))
    before = heldout_losses(model, held)
    weights = mc.weights.softmax(0.5) if rule == "softmax" else mc.weights.uniform()
    result = deep.pretrain(
        model,
        SceneBatches(scenes, 12, 0.75, PATCH, seed=0),
        num_tasks=3,
        task_loss=modality_task_loss,
        rule=weights,
        steps=40,
        lr=3e-3,
        warmup_steps=4,
        progress=False,
        device="cpu",
        log_every=5,
    )
    after = heldout_losses(result.model, held)
    assert all(a < b for a, b in zip(after, before, strict=True)), (before, after)
    assert result.history["task_losses"].shape[1] == 3
    w = result.history["weights"]
    if rule == "uniform":
        np.testing.assert_allclose(w, 1 / 3, rtol=1e-6)
    else:  # softmax puts the most weight on the modality with the largest loss
        last = result.history["task_losses"][0]
        assert int(np.argmax(w[0])) == int(np.argmax(last))


def test_forward_and_backward_under_bf16_autocast(scenes):
    """bf16 autocast (as deep.pretrain uses on CUDA) mixes bf16 activations with fp32
    parameters: the decoder's scatter must not mix dtypes (found on an H200)."""
    model = _model()
    mask = random_mask(4, 3 * P, 0.75, np.random.default_rng(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(*_batch(scenes, mask))
        loss = sum(out.predictions[m].float().pow(2).mean() for m in MODALITIES)
    loss.backward()
    assert all(torch.isfinite(out.predictions[m].float()).all() for m in MODALITIES)
