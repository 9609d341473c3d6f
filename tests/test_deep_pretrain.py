"""deep.pretrain features: transformers models, compile, accumulation, schedules, logs, plots."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
import torch

import deep
import minimax_core as mc
from deep.data import BatchStream, move_to_device

M = 3


def _linear_data(n_batches: int, size: int = 12, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        x = torch.randn(size, 3, generator=g)
        t = torch.arange(size) % M  # equal task counts in every batch
        out.append({"x": x, "y": x[:, :1] * (t[:, None] + 1.0), "t": t})
    return out


def _sq_loss(
    model: torch.nn.Module, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    return ((model(batch["x"]) - batch["y"]) ** 2).squeeze(1), batch["t"]


def _linear(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Linear(3, 1)


def _sgd(model: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.05)


@pytest.mark.slow
def test_a_transformers_bert_trains_on_per_token_tasks() -> None:
    """BERT (from a config, no download) with an MLM loss split into tasks by token class."""
    from transformers import BertConfig, BertForMaskedLM

    vocab = 60
    config = BertConfig(
        vocab_size=vocab,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    model = BertForMaskedLM(config)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, vocab, (8, 16), generator=g)
    ids = torch.where(torch.arange(16) % 2 == 0, ids, (ids + 1) % vocab)  # learnable structure
    masked = torch.rand(8, 16, generator=g) < 0.3
    batch = {
        "input_ids": torch.where(masked, 3, ids),
        "attention_mask": torch.ones_like(ids),
        "labels": torch.where(masked, ids, -100),
        "token_task": ids % M,
    }

    def mlm_loss(
        model: torch.nn.Module, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return deep.per_token_cross_entropy(logits, batch["labels"], batch["token_task"])

    result = deep.pretrain(
        model,
        [batch],
        num_tasks=M,
        task_loss=mlm_loss,
        rule=mc.weights.softmax(0.3),
        steps=12,
        lr=3e-3,
        log_every=4,
        progress=False,
    )
    losses = result.history["task_losses"]
    assert losses.shape == (3, M) and np.all(np.isfinite(losses))
    assert result.history["worst_loss"][-1] < result.history["worst_loss"][0]
    assert result.history["counts"][0].sum() == pytest.approx(4 * masked.sum().item())
    assert result.mean_weights.sum() == pytest.approx(1.0)


def test_compile_wraps_but_checkpoints_the_plain_model(tmp_path: Path) -> None:
    result = deep.pretrain(
        _linear(),
        _linear_data(2),
        num_tasks=M,
        task_loss=_sq_loss,
        rule=mc.weights.softmax(1.0),
        steps=2,
        compile={"backend": "eager"},
        checkpoint_dir=tmp_path,
        progress=False,
    )
    assert isinstance(result.model, torch.nn.Linear)
    names = set(deep.load_checkpoint(tmp_path).tensors) | set(
        __import__("safetensors.torch", fromlist=["load_file"]).load_file(
            str(tmp_path / "step_00000002" / "model.safetensors")
        )
    )
    assert "weight" in names and not any("_orig_mod" in n for n in names)


def test_accumulation_equals_one_big_batch_for_uniform_weights_and_equal_counts() -> None:
    data = _linear_data(4)
    big = [{k: torch.cat([data[i][k], data[i + 1][k]]) for k in data[0]} for i in (0, 2)]
    common = {
        "num_tasks": M,
        "task_loss": _sq_loss,
        "rule": mc.weights.uniform(),
        "steps": 2,
        "optimizer": _sgd,
        "grad_clip": None,
        "lr_schedule": "constant",
        "progress": False,
        "log_every": 1,
    }
    one = deep.pretrain(_linear(), big, **common)
    two = deep.pretrain(_linear(), data, accumulation_steps=2, **common)
    for a, b in zip(one.model.parameters(), two.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(one.history["task_losses"], two.history["task_losses"], rtol=1e-6)
    assert two.history["counts"][0].tolist() == [8.0, 8.0, 8.0]


def test_lr_factor_schedules() -> None:
    kw: dict[str, Any] = {"steps": 10, "warmup_steps": 4, "min_lr_ratio": 0.1}
    assert [deep.lr_factor(s, lr_schedule="cosine", **kw) for s in range(4)] == [0.2, 0.4, 0.6, 0.8]
    assert deep.lr_factor(4, lr_schedule="cosine", **kw) == 1.0
    assert deep.lr_factor(7, lr_schedule="cosine", **kw) == pytest.approx(
        0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5))
    )
    assert deep.lr_factor(7, lr_schedule="linear", **kw) == pytest.approx(1 - 0.9 * 0.5)
    assert deep.lr_factor(9, lr_schedule="constant", **kw) == 1.0
    assert deep.lr_factor(3, lr_schedule=lambda s: 0.5**s, **kw) == 0.125
    with pytest.raises(ValueError, match=r"lr_schedule\(2\) must return a finite number >= 0"):
        deep.lr_factor(2, lr_schedule=lambda s: -1.0, **kw)
    result = deep.pretrain(
        _linear(),
        _linear_data(1),
        num_tasks=M,
        task_loss=_sq_loss,
        rule=mc.weights.uniform(),
        steps=6,
        lr=0.1,
        warmup_steps=2,
        lr_schedule="linear",
        min_lr_ratio=0.0,
        log_every=1,
        progress=False,
    )
    np.testing.assert_allclose(result.history["lr"], [0.1 / 3, 0.2 / 3, 0.1, 0.075, 0.05, 0.025])


def test_logs_history_mean_weights_and_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    names = ["nouns", "verbs", "rest"]
    result = deep.pretrain(
        _linear(),
        _linear_data(3),
        num_tasks=M,
        task_loss=_sq_loss,
        rule=mc.weights.softmax(2.0),
        steps=5,
        log_every=2,
        log_dir=tmp_path,
        task_names=names,
        progress=True,
    )
    assert "pretrain" in capsys.readouterr().err  # the tqdm bar
    assert result.history["step"].tolist() == [2, 4, 5]
    assert result.history["weights"].shape == (3, M)
    entries = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in entries] == [2, 4, 5]
    assert {"items_per_second", "steps_per_second", "lr", "grad_norm", "worst_loss"} <= set(
        entries[0]
    )
    from_log = deep.read_log(tmp_path)
    for key in ("loss", "task_losses", "weights", "lr"):
        np.testing.assert_allclose(from_log[key], result.history[key], rtol=1e-12)
    # the logged weights are interval means, and mean_weights their step-weighted mean
    expected = (result.history["weights"] * np.array([[2], [2], [1]])).sum(0) / 5
    np.testing.assert_allclose(result.mean_weights, expected, rtol=1e-6)
    saved = json.loads((tmp_path / "mean_weights.json").read_text())
    assert saved["task_names"] == names and saved["mean_weights"] == pytest.approx(
        result.mean_weights.tolist()
    )
    assert json.loads((tmp_path / "config.json").read_text())["rule"] == "softmax"
    for source in (result, tmp_path, tmp_path / "log.jsonl", result.history):
        png = deep.plot_history(source, tmp_path / "plot.png")
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(TypeError, match="plot_history needs"):
        deep.plot_history(3, tmp_path / "x.png")


def test_tensorboard_is_optional(tmp_path: Path) -> None:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install tensorboard"):
            deep.pretrain(
                _linear(),
                _linear_data(1),
                num_tasks=M,
                task_loss=_sq_loss,
                rule=mc.weights.uniform(),
                steps=1,
                log_dir=tmp_path,
                tensorboard=True,
                progress=False,
            )
    else:
        deep.pretrain(
            _linear(),
            _linear_data(1),
            num_tasks=M,
            task_loss=_sq_loss,
            rule=mc.weights.uniform(),
            steps=2,
            log_every=1,
            log_dir=tmp_path,
            tensorboard=True,
            progress=False,
        )
        assert any((tmp_path / "tensorboard").iterdir())


def test_bf16_autocast_on_cpu_and_estimator_in_the_loop() -> None:
    result = deep.pretrain(
        _linear(),
        _linear_data(2),
        num_tasks=M,
        task_loss=_sq_loss,
        rule=mc.weights.hardmax(),
        estimator=deep.ema(0.9),
        steps=3,
        precision="bf16",
        log_every=1,
        progress=False,
    )
    assert result.config["precision"] == "bf16"
    assert result.estimator_state.step == 3 and bool(result.estimator_state.seen.all())
    assert np.all(np.isfinite(result.history["task_losses"]))


def test_softmax_and_uniform_differ_only_in_the_rule() -> None:
    runs = {
        name: deep.pretrain(
            _linear(),
            _linear_data(2),
            num_tasks=M,
            task_loss=_sq_loss,
            rule=rule,
            steps=1,
            log_every=1,
            progress=False,
        )
        for name, rule in (("uniform", mc.weights.uniform()), ("softmax", mc.weights.softmax(0.5)))
    }
    np.testing.assert_array_equal(
        runs["uniform"].history["task_losses"], runs["softmax"].history["task_losses"]
    )
    assert runs["uniform"].history["weights"][0].tolist() == pytest.approx([1 / 3] * 3)
    losses = runs["softmax"].history["task_losses"][0]
    expected = mc.weights.softmax_weights(losses, 0.5)
    np.testing.assert_allclose(runs["softmax"].history["weights"][0], expected, rtol=1e-5)


class _Pair(NamedTuple):
    a: torch.Tensor
    b: list[torch.Tensor]


@dataclasses.dataclass
class _Box:
    x: torch.Tensor
    label: str


def test_batch_stream_positions_and_device_moves() -> None:
    stream = BatchStream([1, 2, 3], position=4)  # epochs repeat
    assert [stream.next() for _ in range(3)] == [2, 3, 1] and stream.position == 7
    assert BatchStream(iter([1, 2]), position=1).next() == 2
    with pytest.raises(ValueError, match="cannot resume at data position 5"):
        BatchStream(iter([1, 2]), position=5)
    moved = move_to_device(
        {"p": _Pair(torch.ones(1), [torch.zeros(2)]), "box": _Box(torch.ones(2), "k"), "n": 3},
        torch.device("cpu"),
    )
    assert isinstance(moved["p"], _Pair) and isinstance(moved["box"], _Box) and moved["n"] == 3
