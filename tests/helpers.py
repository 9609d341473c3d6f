"""The problem catalogue shared by the tests (small sizes, fixed seeds), hypothesis
strategies that generate problems, and a tiny BERT checkpoint for the fine-tuning tests."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import strategies as st

import minimax_core as mc

# name -> zero-argument constructor; every entry is strongly convex and has cvxpy_losses
CATALOGUE: dict[str, Callable[[], Any]] = {
    "quad-3x2": lambda: mc.problems.random_quadratic(num_tasks=3, dim=2, seed=1),
    "quad-8x10": lambda: mc.problems.random_quadratic(num_tasks=8, dim=10, seed=2),
    "quad-20x5": lambda: mc.problems.random_quadratic(num_tasks=20, dim=5, seed=3),
    "quad-ill-100": lambda: mc.problems.random_quadratic(
        num_tasks=6, dim=8, mu=0.1, smoothness=10.0, seed=4
    ),
    "quad-single": lambda: mc.problems.random_quadratic(num_tasks=1, dim=4, seed=5),
    "quad-identical": lambda: identical_tasks(4, 3),
    "lsq-5x6": lambda: mc.problems.regression_family(5, 6, seed=6).empirical(40, seed=7),
    "logistic-4x3": lambda: mc.problems.logistic_tasks(4, 3, num_samples=30, l2=0.5, seed=8),
}


def identical_tasks(m: int, d: int) -> mc.problems.QuadraticTasks:
    """``m`` copies of one quadratic: ties everywhere (weights must split evenly)."""
    base = mc.problems.random_quadratic(num_tasks=1, dim=d, seed=9)
    return mc.problems.QuadraticTasks(
        np.repeat(base.hessian_stack, m, axis=0),
        np.repeat(base.centers, m, axis=0),
        np.repeat(base.offsets, m),
    )


@cache
def problem(name: str) -> Any:
    return CATALOGUE[name]()


@cache
def optimum(name: str) -> float:
    """CVXPY + Clarabel optimum of a catalogue problem (cached per test process)."""
    ref = mc.reference.solve_cvxpy(problem(name))
    assert ref.success, ref.message
    return ref.fun


@st.composite
def quadratic_problems(
    draw: st.DrawFn, max_tasks: int = 6, max_dim: int = 6, max_condition: float = 100.0
) -> mc.problems.QuadraticTasks:
    """Random quadratic task sets with exact constants (condition number up to 100)."""
    m = draw(st.integers(1, max_tasks))
    d = draw(st.integers(2, max_dim))
    mu = draw(st.floats(0.05, 2.0))
    kappa = draw(st.floats(1.0, max_condition))
    seed = draw(st.integers(0, 2**31 - 1))
    scale = draw(st.floats(0.1, 5.0))
    return mc.problems.random_quadratic(
        num_tasks=m, dim=d, mu=mu, smoothness=mu * kappa, seed=seed, center_scale=scale
    )


def tiny_bert_checkpoint(
    folder: Path, words: Sequence[str], num_sentences: int
) -> tuple[Path, Any, Any]:
    """``(path, tokenizer, model)``: a randomly initialised tiny BERT MLM saved in ``folder``
    like the pre-training saves it, with a 100-piece WordPiece tokenizer trained on
    ``num_sentences`` random six-word sentences drawn from ``words`` (needs the [deep] extra)."""
    from deep.apps.pos_bert.model import bert_config, make_mlm_model, save_pretrained_atomic
    from deep.apps.pos_bert.tagging import Sentence, TaggedCorpus
    from deep.apps.pos_bert.tokenizer import hf_tokenizer, train_wordpiece

    rng = np.random.default_rng(0)
    sentences = tuple(
        Sentence(0, i, tuple(rng.choice(words, size=6)), (7,) * 6) for i in range(num_sentences)
    )
    tok = hf_tokenizer(train_wordpiece(TaggedCorpus(("d",), sentences, "x"), vocab_size=100))
    model = make_mlm_model(bert_config("tiny", vocab_size=tok.vocab_size, max_len=32), seed=0)
    path = save_pretrained_atomic(model, folder / "m", tokenizer=tok)
    return path, tok, model


def run_torchrun(script: Path, args: Sequence[str], timeout: float) -> tuple[int, str]:
    """``torchrun --standalone --nproc_per_node=2 script *args`` on CPU (one thread per worker,
    this checkout first on the path, no inherited rank variables), in its own process group:
    on timeout the whole group (launcher and workers) is killed, so a hung worker never
    outlives the test, and the test fails with the tail of the output."""
    import os
    import signal
    import subprocess
    import sys

    import pytest

    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    }
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(script),
        *args,
    ]
    proc = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"torchrun did not finish in {timeout} s:\n{out[-6000:]}")
    return proc.returncode, out
