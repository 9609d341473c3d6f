"""Checkpoints: bit-for-bit resume (periodic and Ctrl-C), data positions, corruption, mismatch."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import deep
import minimax_core as mc

M = 3
STEPS = 8


def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(4, 16), torch.nn.GELU(), torch.nn.Dropout(0.2), torch.nn.Linear(16, 1)
    )


def _batches() -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(123)
    out = []
    for _ in range(6):
        x = torch.randn(10, 4, generator=g)
        t = torch.randint(0, M, (10,), generator=g)
        out.append({"x": x, "y": x.sum(1, keepdim=True) * (t[:, None] + 1.0), "t": t})
    return out


def _task_loss(
    model: torch.nn.Module, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    return ((model(batch["x"]) - batch["y"]) ** 2).squeeze(1), batch["t"]


def _options(**extra: Any) -> dict[str, Any]:
    options: dict[str, Any] = {
        "num_tasks": M,
        "task_loss": _task_loss,
        "rule": deep.mix_uniform(mc.weights.exponentiated_gradient(0.05), 0.05),
        "estimator": deep.ema(0.5),
        "steps": STEPS,
        "lr": 3e-3,
        "warmup_steps": 2,
        "accumulation_steps": 2,
        "log_every": 1,
        "progress": False,
        "seed": 7,
    }
    options.update(extra)
    return options


def _params(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def _assert_same_run(a: deep.PretrainResult, b: deep.PretrainResult) -> None:
    for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(pa, pb), "parameters differ"
    for key in a.history:
        np.testing.assert_array_equal(a.history[key], b.history[key], err_msg=key)
    np.testing.assert_array_equal(a.mean_weights, b.mean_weights)
    assert a.steps == b.steps == STEPS


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[deep.PretrainResult, Path]:
    """One uninterrupted run that keeps a checkpoint every 3 steps."""
    root = tmp_path_factory.mktemp("reference")
    result = deep.pretrain(
        _model(0),
        _batches(),
        **_options(
            checkpoint_dir=root / "ckpt",
            checkpoint_every=3,
            keep_checkpoints=None,
            log_dir=root / "log",
        ),
    )
    return result, root


def test_resume_from_a_periodic_checkpoint_is_bit_for_bit(
    reference: tuple[deep.PretrainResult, Path], tmp_path: Path
) -> None:
    full, root = reference
    assert [p.name for p in deep.checkpoint.list_checkpoints(root / "ckpt")] == [
        "step_00000003",
        "step_00000006",
        "step_00000008",
    ]
    resumed = deep.pretrain(
        _model(99),  # a different initialisation: everything must come from the checkpoint
        _batches(),
        **_options(resume=root / "ckpt" / "step_00000003", log_dir=tmp_path / "log"),
    )
    _assert_same_run(full, resumed)
    lines = (tmp_path / "log" / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == list(range(4, STEPS + 1))


def test_ctrl_c_writes_a_checkpoint_and_resume_matches(
    reference: tuple[deep.PretrainResult, Path], tmp_path: Path
) -> None:
    full, _ = reference
    calls = {"n": 0}

    def interrupting_loss(model: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        calls["n"] += 1
        if calls["n"] == 9:  # micro-batch 1 of step 5: the step finishes, then the run stops
            os.kill(os.getpid(), signal.SIGINT)
        return _task_loss(model, batch)

    ckpt_dir = tmp_path / "ckpt"
    with _sigint(signal.default_int_handler):  # the suite may run with SIGINT ignored
        with pytest.raises(KeyboardInterrupt, match="interrupted after step 5"):
            deep.pretrain(
                _model(0),
                _batches(),
                **_options(
                    task_loss=interrupting_loss, checkpoint_dir=ckpt_dir, log_dir=tmp_path / "log"
                ),
            )
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    assert deep.find_latest(ckpt_dir).name == "step_00000005"
    resumed = deep.pretrain(
        _model(1),
        _batches(),
        **_options(checkpoint_dir=ckpt_dir, resume=True, log_dir=tmp_path / "log"),
    )
    _assert_same_run(full, resumed)
    steps = [
        json.loads(line)["step"]
        for line in (tmp_path / "log" / "log.jsonl").read_text().splitlines()
    ]
    assert steps == list(range(1, STEPS + 1))  # no duplicates after the resume


@contextlib.contextmanager
def _sigint(handler: Any) -> Iterator[None]:
    """SIGINT set to ``handler`` for the block; the disposition found is restored after."""
    found = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, found)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_ignored_signal_stays_ignored_during_and_after_the_run(
    tmp_path: Path, sig: signal.Signals
) -> None:
    """Before: deep.pretrain replaced SIG_IGN by its handler, so an ignored Ctrl-C stopped it."""
    during: list[Any] = []

    def signalling_loss(model: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        during.append(signal.getsignal(sig))
        os.kill(os.getpid(), sig)  # ignored: the run goes on
        return _task_loss(model, batch)

    found = signal.signal(sig, signal.SIG_IGN)
    try:
        result = deep.pretrain(
            _model(0),
            _batches(),
            **_options(steps=2, task_loss=signalling_loss, checkpoint_dir=tmp_path),
        )
        assert signal.getsignal(sig) is signal.SIG_IGN
    finally:
        signal.signal(sig, found)
    assert result.steps == 2 and during and all(h is signal.SIG_IGN for h in during)


def test_outside_the_main_thread_no_handler_is_installed(tmp_path: Path) -> None:
    import threading

    found = signal.getsignal(signal.SIGINT)
    seen: list[Any] = []

    def run() -> None:
        def loss(model: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
            seen.append(signal.getsignal(signal.SIGINT))
            return _task_loss(model, batch)

        seen.append(
            deep.pretrain(
                _model(0), _batches(), **_options(steps=2, task_loss=loss, checkpoint_dir=tmp_path)
            )
        )

    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    assert isinstance(seen[-1], deep.PretrainResult) and seen[-1].steps == 2
    assert all(h is found for h in seen[:-1]) and signal.getsignal(signal.SIGINT) is found


def _generator(batches: list[Any]) -> Iterator[Any]:
    while True:
        yield from batches


def test_resume_with_a_generator_and_with_a_seekable_callable(
    reference: tuple[deep.PretrainResult, Path],
) -> None:
    full, root = reference
    start = root / "ckpt" / "step_00000006"
    from_generator = deep.pretrain(_model(2), _generator(_batches()), **_options(resume=start))
    _assert_same_run(full, from_generator)
    data = _batches()
    seen: list[int] = []

    def seek(position: int) -> Iterator[Any]:
        seen.append(position)
        return (data[i % len(data)] for i in range(position, 10**9))

    from_callable = deep.pretrain(_model(3), seek, **_options(resume=start))
    _assert_same_run(full, from_callable)
    assert seen == [12]  # 6 steps x 2 micro-batches, reached without replaying


def test_checkpoint_contents_load_without_pickle(
    reference: tuple[deep.PretrainResult, Path],
) -> None:
    _, root = reference
    checkpoint = deep.load_checkpoint(root / "ckpt")  # the newest one
    assert checkpoint.step == STEPS
    meta = checkpoint.meta
    assert meta["position"] == 2 * STEPS and meta["config"]["num_tasks"] == M
    assert set(meta["files"]) == {"model.safetensors", "optimizer.pt", "state.safetensors"}
    assert {"rng.0.torch", "rule_state.log_weights", "estimator_state.estimate"} <= set(
        checkpoint.tensors
    )
    assert not any(p.name.startswith(".tmp") for p in (root / "ckpt").iterdir())
    weights = json.loads((root / "log" / "mean_weights.json").read_text())
    assert len(weights["mean_weights"]) == M and sum(weights["mean_weights"]) == pytest.approx(1.0)


def _copy_checkpoint(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for file in src.iterdir():
        (dst / file.name).write_bytes(file.read_bytes())
    return dst


def test_corrupted_checkpoint_is_a_clear_error(
    reference: tuple[deep.PretrainResult, Path], tmp_path: Path
) -> None:
    _, root = reference
    for name in ("model.safetensors", "optimizer.pt", "state.safetensors"):
        bad = _copy_checkpoint(root / "ckpt" / "step_00000003", tmp_path / name / "step_00000003")
        data = bytearray((bad / name).read_bytes())
        data[len(data) // 2] ^= 0xFF
        (bad / name).write_bytes(bytes(data))
        with pytest.raises(
            deep.CheckpointError, match=f"corrupted: {name} does not match its SHA-256"
        ):
            deep.pretrain(_model(0), _batches(), **_options(resume=bad))
    bad = _copy_checkpoint(root / "ckpt" / "step_00000003", tmp_path / "meta" / "step_00000003")
    (bad / "meta.json").write_text("{not json")
    with pytest.raises(deep.CheckpointError, match=r"cannot read meta\.json"):
        deep.load_checkpoint(bad)
    (bad / "optimizer.pt").unlink()
    (bad / "meta.json").write_text((root / "ckpt" / "step_00000003" / "meta.json").read_text())
    with pytest.raises(deep.CheckpointError, match=r"incomplete: optimizer\.pt is missing"):
        deep.load_checkpoint(bad)
    with pytest.raises(deep.CheckpointError, match="no checkpoint at"):
        deep.load_checkpoint(tmp_path / "nothing-here")


def test_mismatched_checkpoint_is_a_clear_error_and_leaves_the_model_alone(
    reference: tuple[deep.PretrainResult, Path],
) -> None:
    _, root = reference
    start = root / "ckpt" / "step_00000003"
    with pytest.raises(deep.CheckpointError, match="num_tasks was 3, now 4"):
        deep.pretrain(_model(0), _batches(), **_options(resume=start, num_tasks=4))
    with pytest.raises(deep.CheckpointError, match="rule was 'mix_uniform"):
        deep.pretrain(_model(0), _batches(), **_options(resume=start, rule=mc.weights.uniform()))
    with pytest.raises(deep.CheckpointError, match="accumulation_steps was 2, now 1"):
        deep.pretrain(_model(0), _batches(), **_options(resume=start, accumulation_steps=1))
    torch.manual_seed(0)
    wider = torch.nn.Sequential(
        torch.nn.Linear(4, 32), torch.nn.GELU(), torch.nn.Dropout(0.2), torch.nn.Linear(32, 1)
    )
    before = _params(wider)
    with pytest.raises(
        deep.CheckpointError, match=r"does not match the model: shape mismatches \['0.weight"
    ):
        deep.pretrain(wider, _batches(), **_options(resume=start))
    assert all(torch.equal(a, b) for a, b in zip(before, _params(wider), strict=True))
    other = torch.nn.Sequential(torch.nn.Linear(4, 1))
    with pytest.raises(deep.CheckpointError, match="missing keys"):
        deep.pretrain(other, _batches(), **_options(resume=start))


def test_a_failed_write_leaves_no_checkpoint_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_save(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(deep.checkpoint, "save_file", broken_save)
    with pytest.raises(OSError, match="disk full"):
        deep.pretrain(_model(0), _batches(), **_options(steps=2, checkpoint_dir=tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_keep_checkpoints_and_resume_options(tmp_path: Path) -> None:
    result = deep.pretrain(
        _model(0),
        _batches(),
        **_options(steps=4, checkpoint_dir=tmp_path, checkpoint_every=1, keep_checkpoints=2),
    )
    assert [p.name for p in deep.checkpoint.list_checkpoints(tmp_path)] == [
        "step_00000003",
        "step_00000004",
    ]
    assert result.checkpoint == tmp_path / "step_00000004"
    with pytest.raises(ValueError, match="resume=True needs checkpoint_dir"):
        deep.pretrain(_model(0), _batches(), **_options(resume=True))
    with pytest.raises(ValueError, match="checkpoint_every needs checkpoint_dir"):
        deep.pretrain(_model(0), _batches(), **_options(checkpoint_every=2))


# ---------------------------------------------------- integrity of meta.json (#14.2), options (#14.3)


def _edited_copy(src: Path, dst: Path, edit: Any, resign: bool) -> Path:
    """A copy of checkpoint ``src`` whose meta.json went through ``edit(meta)``; ``resign``
    recomputes its hash (as a writer with a bug would), so that only the field checks remain."""
    bad = _copy_checkpoint(src, dst)
    meta = json.loads((bad / "meta.json").read_text())
    edit(meta)
    if resign:
        meta["meta_sha256"] = deep.checkpoint._meta_digest(meta)
    (bad / "meta.json").write_text(json.dumps(meta))
    return bad


def _set(path: str, value: Any) -> Any:
    def edit(meta: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = meta
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[last] = value

    return edit


@pytest.mark.parametrize(
    ("field", "value"),
    [("step", 4), ("position", 7), ("rule_state.step", 9), ("skipped_steps", 1)],
)
def test_an_edited_meta_json_is_refused(
    reference: tuple[deep.PretrainResult, Path], tmp_path: Path, field: str, value: Any
) -> None:
    """Before: an edited step, position or rule step resumed silently on another trajectory."""
    _, root = reference
    bad = _edited_copy(
        root / "ckpt" / "step_00000003", tmp_path / "step_00000003", _set(field, value), False
    )
    model = _model(5)
    before = _params(model)
    with pytest.raises(
        deep.CheckpointError, match=r"edited: meta\.json does not match its meta_sha256"
    ):
        deep.pretrain(model, _batches(), **_options(resume=bad))
    assert all(torch.equal(a, b) for a, b in zip(before, _params(model), strict=True))


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("position", "abc", r"field 'position' must be an integer >= 6 and <= 7, got 'abc'"),
        ("position", 9, r"field 'position' must be an integer >= 6 and <= 7, got 9"),
        ("step", 4, r"field 'step' is 4, but the folder is named for step 3"),
        ("skipped_steps", -1, r"field 'skipped_steps' must be an integer >= 0 and <= 3"),
        ("last_log_step", None, r"field 'last_log_step' must be an integer"),
        ("rule_state.step", "x", r"field 'rule_state\.step' must be an integer, got 'x'"),
        ("rule_state.num_tasks", 3.5, r"field 'rule_state\.num_tasks' must be an integer"),
        (
            "running.interval_sums",
            {"tensor": "rng.0.torch"},
            r"field 'running\.interval_sums' must be a torch\.float64 tensor of shape \(3,\)",
        ),
        ("running.fault", {"tensor": "nowhere"}, r"'running\.fault' must be a reference"),
        ("rng.0.python", [3, [1, 2], None], r"field 'rng' \(rank 0\) is malformed"),
        ("files", "x", r"field 'files' must be an object"),
    ],
)
def test_a_malformed_meta_field_is_a_checkpoint_error_naming_it(
    reference: tuple[deep.PretrainResult, Path], tmp_path: Path, field: str, value: Any, match: str
) -> None:
    """Before: raw ValueError/KeyError/TypeError, or a silent resume (position 9)."""
    _, root = reference
    bad = _edited_copy(
        root / "ckpt" / "step_00000003", tmp_path / "step_00000003", _set(field, value), True
    )
    model = _model(5)
    before = _params(model)
    with pytest.raises(deep.CheckpointError, match=match):
        deep.pretrain(model, _batches(), **_options(resume=bad))
    assert all(torch.equal(a, b) for a, b in zip(before, _params(model), strict=True))


def test_meta_json_with_nan_or_of_format_1(
    reference: tuple[deep.PretrainResult, Path], tmp_path: Path
) -> None:
    _, root = reference
    src = root / "ckpt" / "step_00000003"
    nan = _copy_checkpoint(src, tmp_path / "nan" / "step_00000003")
    text = (nan / "meta.json").read_text().replace('"position": 6', '"position": NaN')
    (nan / "meta.json").write_text(text)
    with pytest.raises(deep.CheckpointError, match="does not match its meta_sha256"):
        deep.load_checkpoint(nan)

    def as_format_1(meta: dict[str, Any]) -> None:
        meta["format"] = 1
        del meta["meta_sha256"]

    old = _edited_copy(src, tmp_path / "old" / "step_00000003", as_format_1, False)
    with pytest.warns(UserWarning, match="format 1: its meta.json carries no hash"):
        assert deep.load_checkpoint(old).step == 3


def test_resume_with_changed_options_is_refused_unless_allowed(
    reference: tuple[deep.PretrainResult, Path], tmp_path: Path
) -> None:
    """Before: a changed lr, seed or schedule resumed silently."""
    _, root = reference
    start = root / "ckpt" / "step_00000003"
    for change, match in [
        ({"lr": 1e-3}, r"lr was \[0\.003, 0\.003\], now \[0\.001, 0\.001\]"),
        ({"seed": 8}, r"seed was 7, now 8"),
        ({"lr_schedule": "linear"}, r"lr_schedule was 'cosine', now 'linear'"),
        ({"steps": 10}, r"steps was 8, now 10"),
        ({"warmup_steps": 0}, r"warmup_steps was 2, now 0"),
        ({"betas": (0.8, 0.999)}, r"optimizer betas \(parameter group 0\) was \(0\.9, 0\.999\)"),
        ({"grad_clip": None}, r"grad_clip was 1\.0, now None"),
    ]:
        with pytest.raises(deep.CheckpointError, match=match):
            deep.pretrain(_model(0), _batches(), **_options(resume=start, **change))
    with pytest.raises(
        deep.CheckpointError,
        match=r"lr was .*; seed was 7, now 8\. .*pass allow_changes=\('lr', 'seed'\)",
    ):
        deep.pretrain(_model(0), _batches(), **_options(resume=start, lr=1e-3, seed=8))
    resumed = deep.pretrain(
        _model(0),
        _batches(),
        **_options(resume=start, lr=1e-3, betas=(0.8, 0.999), allow_changes=["lr", "betas"]),
    )
    assert resumed.steps == STEPS and resumed.config["base_lrs"] == [1e-3, 1e-3]
    assert deep.pretrain(
        _model(0), _batches(), **_options(resume=start, seed=3, allow_changes=True)
    )
    with pytest.raises(
        ValueError, match=r"allow_changes names unknown options \['learning_rate'\]"
    ):
        deep.pretrain(_model(0), _batches(), **_options(allow_changes=["learning_rate"]))


def test_allowed_optimizer_changes_take_effect(
    reference: tuple[deep.PretrainResult, Path],
) -> None:
    """Loading an optimizer state restores its hyperparameters: an allowed change must win."""
    _, root = reference
    seen: list[Any] = []

    def make(model: torch.nn.Module) -> torch.optim.Optimizer:
        groups = [  # the default optimizer's two groups: matrices, then the rest
            {"params": [p for p in model.parameters() if p.dim() >= 2]},
            {"params": [p for p in model.parameters() if p.dim() < 2], "weight_decay": 0.0},
        ]
        opt = torch.optim.AdamW(groups, lr=3e-3, betas=(0.5, 0.9))
        seen.append(opt)
        return opt

    options = _options(resume=root / "ckpt" / "step_00000003", allow_changes=["optimizer"])
    del options["lr"]
    deep.pretrain(_model(0), _batches(), optimizer=make, **options)
    assert seen[0].param_groups[0]["betas"] == (0.5, 0.9)


# ----------------------------------------------------------- atomic pruning (#14.4), pickle (#14.8)


def test_a_kill_while_pruning_leaves_no_half_deleted_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the pruned step_* lost some files but kept meta.json and was listed (7 of 40
    SIGKILLs); temporaries were never cleaned (14 of 40)."""
    import shutil

    real_rmtree = shutil.rmtree

    def killed_rmtree(path: Any, *args: Any, **kwargs: Any) -> None:
        for file in sorted(Path(path).rglob("*.safetensors")):
            file.unlink()  # some files go, then the process dies
            raise SystemExit(137)

    monkeypatch.setattr(deep.checkpoint.shutil, "rmtree", killed_rmtree)
    with pytest.raises(SystemExit):
        deep.pretrain(
            _model(0),
            _batches(),
            **_options(steps=3, checkpoint_dir=tmp_path, checkpoint_every=1, keep_checkpoints=1),
        )
    monkeypatch.setattr(deep.checkpoint.shutil, "rmtree", real_rmtree)
    assert [p.name for p in deep.checkpoint.list_checkpoints(tmp_path)] == ["step_00000002"]
    stale = tmp_path / ".tmp-step_00000009-x1"  # a writer killed mid-write
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"partial")
    (tmp_path / "step_00000005").mkdir()  # damaged from outside: meta.json but no files
    (tmp_path / "step_00000005" / "meta.json").write_text("{}")
    with pytest.warns(
        UserWarning, match=r"skipping incomplete checkpoint folders \['step_00000005'\]"
    ):
        latest = deep.find_latest(tmp_path)
    assert latest == tmp_path / "step_00000002"
    with pytest.warns(UserWarning, match="skipping incomplete"):
        result = deep.pretrain(
            _model(0), _batches(), **_options(steps=3, checkpoint_dir=tmp_path, resume=True)
        )
    assert result.steps == 3
    hidden = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("."))
    assert hidden == []  # the .del-* and .tmp-* leftovers were cleaned at the start


def test_a_malicious_pickle_is_a_checkpoint_error_and_runs_no_code(
    reference: tuple[deep.PretrainResult, Path], tmp_path: Path
) -> None:
    """Before: pickle.UnpicklingError (still no code ran)."""
    import pickle

    _, root = reference
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.mkdir, (str(marker),))

    def plant(meta: dict[str, Any]) -> None:
        file = tmp_path / "ckpt" / "step_00000003" / "optimizer.pt"
        file.write_bytes(pickle.dumps(Payload(), protocol=2))
        meta["files"]["optimizer.pt"] = deep.checkpoint._sha256(file)

    bad = _copy_checkpoint(root / "ckpt" / "step_00000003", tmp_path / "ckpt" / "step_00000003")
    meta = json.loads((bad / "meta.json").read_text())
    plant(meta)
    meta["meta_sha256"] = deep.checkpoint._meta_digest(meta)
    (bad / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(
        deep.CheckpointError,
        match=r"optimizer\.pt holds more than tensors .*no code in it ran.*posix\.mkdir",
    ):
        deep.load_checkpoint(bad)
    assert not marker.exists()
