"""Text fine-tuning and evaluation: GLUE-format readers, the official metrics, a trainer.

Tasks are :class:`TextTask` (single sentences or sentence pairs, classification or
regression). Sources:

- a local GLUE directory in the standard layout (``CoLA/train.tsv``, ``SST-2/dev.tsv``,
  ``MNLI/dev_matched.tsv``, ...): :func:`read_glue_task`; a malformed row raises
  ``ValueError`` naming the file and line;
- Hugging Face ``datasets`` where the user has it (imported lazily, never by default):
  :func:`load_glue_hf`;
- any task built in code (the POS-BERT built-in suite, ``deep.apps.pos_bert.suite``).

Metrics: :mod:`deep.apps.evaluation` (GLUE's official ones; :data:`GLUE_TASKS` gives each
task's primary metric).

:func:`finetune` trains ``BertForSequenceClassification`` from a ``save_pretrained``
checkpoint with a :class:`~deep.apps.finetune.FinetuneConfig` (AdamW with decay on matrices
only, linear warm-up and linear decay to 0, bf16 autocast where the device supports it: the
engine's :mod:`deep.optim` set-up) and returns the dev metrics. Its classifier
reads BERT's pooler on ``[CLS]`` (``pooling="cls"``, the GLUE recipe) or the mean of the
last hidden states over the attended tokens (``pooling="mean"``). Use ``"mean"`` for an
encoder pre-trained briefly by masked LM alone (no sentence-level objective trains
``[CLS]``): from such tiny checkpoints the ``[CLS]`` head could not fit 64 training examples
in 60 steps, where the mean-pooled head fits them all (``tests/test_text_sanity.py``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .evaluation import METRICS, compute_metrics
from .finetune import FinetuneConfig

__all__ = [
    "GLUE_TASKS",
    "FinetuneResult",
    "GlueSpec",
    "TextExample",
    "TextTask",
    "finetune",
    "glue_task_name",
    "load_glue_hf",
    "read_glue_task",
]


# --------------------------------------------------------------------------- tasks


class TextExample(NamedTuple):
    """One example: a sentence (``text_b`` None) or a sentence pair, and its label (a class
    index, or a float target for regression)."""

    text_a: str
    text_b: str | None
    label: float


@dataclass(frozen=True)
class TextTask:
    """A downstream text task. ``num_labels == 1`` is regression. ``metric`` is the primary
    metric (the one the worst-case report uses); ``metrics`` every metric reported."""

    name: str
    metric: str
    num_labels: int
    train: tuple[TextExample, ...]
    dev: tuple[TextExample, ...]
    metrics: tuple[str, ...] = ()
    label_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"task {self.name}: metric must be one of {sorted(METRICS)}")
        if not self.metrics:
            object.__setattr__(self, "metrics", (self.metric,))
        if self.metric not in self.metrics:
            raise ValueError(f"task {self.name}: the primary metric must be in metrics")
        if not isinstance(self.num_labels, int) or self.num_labels < 1:
            raise ValueError(f"task {self.name}: num_labels must be an integer >= 1")
        if not self.train or not self.dev:
            raise ValueError(f"task {self.name}: train and dev must be non-empty")
        if self.num_labels > 1:
            for split, rows in (("train", self.train), ("dev", self.dev)):
                bad = [e.label for e in rows if not float(e.label).is_integer()]
                bad += [e.label for e in rows if not 0 <= int(e.label) < self.num_labels]
                if bad:
                    raise ValueError(
                        f"task {self.name} {split}: labels must be class indices in "
                        f"[0, {self.num_labels}), got e.g. {bad[:3]}"
                    )

    def subsample(self, max_train: int | None, max_dev: int | None, seed: int = 0) -> TextTask:
        """At most ``max_train``/``max_dev`` examples, drawn without replacement (fixed seed)."""
        rng = np.random.default_rng(seed)

        def pick(rows: tuple[TextExample, ...], limit: int | None) -> tuple[TextExample, ...]:
            if limit is None or limit >= len(rows):
                return rows
            if limit < 1:
                raise ValueError(f"example limits must be >= 1, got {limit}")
            keep = np.sort(rng.choice(len(rows), size=limit, replace=False))
            return tuple(rows[i] for i in keep)

        return TextTask(
            self.name,
            self.metric,
            self.num_labels,
            pick(self.train, max_train),
            pick(self.dev, max_dev),
            self.metrics,
            self.label_names,
        )


# --------------------------------------------------------------------------- GLUE


@dataclass(frozen=True)
class GlueSpec:
    """Where a GLUE task's fields are. Columns are header names, or 0-based indices for a
    file without header (CoLA). ``labels``: the label strings in class order (empty for
    regression); ``label_range``: the closed interval a regression label must lie in."""

    folder: str
    text_a: str | int
    text_b: str | int | None
    label: str | int
    labels: tuple[str, ...]
    metric: str
    metrics: tuple[str, ...]
    dev_file: str = "dev.tsv"
    header: bool = True
    hf_config: str = ""
    hf_fields: tuple[str, str | None] = ("sentence", None)
    label_range: tuple[float, float] | None = None


GLUE_TASKS: dict[str, GlueSpec] = {
    "CoLA": GlueSpec("CoLA", 3, None, 1, ("0", "1"), "mcc", ("mcc", "acc"), header=False,
                     hf_config="cola"),
    "SST-2": GlueSpec("SST-2", "sentence", None, "label", ("0", "1"), "acc", ("acc",),
                      hf_config="sst2"),
    "MRPC": GlueSpec("MRPC", "#1 String", "#2 String", "Quality", ("0", "1"), "f1",
                     ("f1", "acc"), hf_config="mrpc", hf_fields=("sentence1", "sentence2")),
    "QQP": GlueSpec("QQP", "question1", "question2", "is_duplicate", ("0", "1"), "f1",
                    ("f1", "acc"), hf_config="qqp", hf_fields=("question1", "question2")),
    "STS-B": GlueSpec("STS-B", "sentence1", "sentence2", "score", (), "pearson",
                      ("pearson", "spearman"), hf_config="stsb",
                      hf_fields=("sentence1", "sentence2"), label_range=(0.0, 5.0)),
    "MNLI": GlueSpec("MNLI", "sentence1", "sentence2", "gold_label",
                     ("contradiction", "entailment", "neutral"), "acc", ("acc",),
                     dev_file="dev_matched.tsv", hf_config="mnli",
                     hf_fields=("premise", "hypothesis")),
    "QNLI": GlueSpec("QNLI", "question", "sentence", "label", ("entailment", "not_entailment"),
                     "acc", ("acc",), hf_config="qnli", hf_fields=("question", "sentence")),
    "RTE": GlueSpec("RTE", "sentence1", "sentence2", "label", ("entailment", "not_entailment"),
                    "acc", ("acc",), hf_config="rte", hf_fields=("sentence1", "sentence2")),
    "WNLI": GlueSpec("WNLI", "sentence1", "sentence2", "label", ("0", "1"), "acc", ("acc",),
                     hf_config="wnli", hf_fields=("sentence1", "sentence2")),
}  # fmt: skip


def glue_task_name(name: str) -> str:
    """Canonical GLUE name for ``name`` (case, ``-`` and ``_`` ignored: ``sst2`` -> ``SST-2``)."""

    def norm(s: str) -> str:
        return s.lower().replace("-", "").replace("_", "")

    for canonical in GLUE_TASKS:
        if norm(canonical) == norm(name):
            return canonical
    raise ValueError(f"unknown GLUE task {name!r}; known: {', '.join(GLUE_TASKS)}")


def _column(spec: str | int, header: list[str] | None, path: Path) -> int:
    if isinstance(spec, int):
        return spec
    assert header is not None
    if spec not in header:
        raise ValueError(f"{path}:1: header has no column {spec!r} (header: {header})")
    return header.index(spec)


def _decode_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 file (``\\n`` or ``\\r\\n``; a leading byte-order mark dropped);
    a byte that is not UTF-8 is an error naming file:line and column."""
    raw = path.read_bytes().removeprefix(b"\xef\xbb\xbf").split(b"\n")
    if raw and raw[-1] == b"":
        raw.pop()
    lines = []
    for number, line in enumerate(raw, start=1):
        try:
            lines.append(line.decode("utf-8").removesuffix("\r"))
        except UnicodeDecodeError as err:
            raise ValueError(
                f"{path}:{number}: not UTF-8 (byte 0x{line[err.start]:02x} at column "
                f"{err.start + 1}); GLUE files are UTF-8: re-encode the file "
                "(e.g. iconv -f latin1 -t utf-8)"
            ) from None
    return lines


def _read_glue_file(path: Path, spec: GlueSpec) -> tuple[TextExample, ...]:
    if not path.is_file():
        raise ValueError(f"GLUE file {path} does not exist")
    lines = _decode_lines(path)
    header = lines[0].split("\t") if spec.header and lines else None
    start = 1 if spec.header else 0
    if header is None and spec.header:
        raise ValueError(f"{path}: empty file (expected a header line)")
    cols = [
        _column(c, header, path) for c in (spec.text_a, spec.text_b, spec.label) if c is not None
    ]
    ia, ib, il = (
        (cols[0], cols[1], cols[2]) if spec.text_b is not None else (cols[0], None, cols[1])
    )
    width = len(header) if header is not None else None
    needed = max(cols) + 1
    rows = []
    for number, line in enumerate(lines[start:], start=start + 1):
        if not line.strip():
            raise ValueError(f"{path}:{number}: empty line")
        fields = line.split("\t")
        if (width is not None and len(fields) != width) or len(fields) < needed:
            expected = width if width is not None else f"at least {needed}"
            raise ValueError(
                f"{path}:{number}: expected {expected} tab-separated fields, got {len(fields)}"
            )
        raw_label = fields[il].strip()
        if spec.labels:
            if raw_label not in spec.labels:
                raise ValueError(
                    f"{path}:{number}: label {raw_label!r} is not one of {list(spec.labels)}"
                )
            label = float(spec.labels.index(raw_label))
        else:
            try:
                label = float(raw_label)
            except ValueError:
                raise ValueError(f"{path}:{number}: label {raw_label!r} is not a number") from None
            if not math.isfinite(label):
                raise ValueError(f"{path}:{number}: label {raw_label!r} is not finite")
            if spec.label_range is not None:
                low, high = spec.label_range
                if not low <= label <= high:
                    raise ValueError(
                        f"{path}:{number}: label {raw_label!r} is outside [{low:g}, {high:g}], "
                        f"the range of {spec.folder} scores"
                    )
        text_a = fields[ia].strip()
        text_b = fields[ib].strip() if ib is not None else None
        if not text_a or (ib is not None and not text_b):
            raise ValueError(f"{path}:{number}: empty sentence")
        rows.append(TextExample(text_a, text_b, label))
    if not rows:
        raise ValueError(f"{path}: no example")
    return tuple(rows)


def read_glue_task(
    glue_dir: str | Path,
    name: str,
    *,
    max_train: int | None = None,
    max_dev: int | None = None,
    seed: int = 0,
) -> TextTask:
    """Read ``glue_dir/FOLDER/train.tsv`` and the dev file of GLUE task ``name``."""
    canonical = glue_task_name(name)
    spec = GLUE_TASKS[canonical]
    folder = Path(glue_dir) / spec.folder
    if not folder.is_dir():
        raise ValueError(f"GLUE directory {glue_dir} has no folder {spec.folder}/ for {canonical}")
    task = TextTask(
        canonical,
        spec.metric,
        max(len(spec.labels), 1),
        _read_glue_file(folder / "train.tsv", spec),
        _read_glue_file(folder / spec.dev_file, spec),
        spec.metrics,
        spec.labels,
    )
    return task.subsample(max_train, max_dev, seed)


def load_glue_hf(
    name: str, *, max_train: int | None = None, max_dev: int | None = None, seed: int = 0
) -> TextTask:
    """A GLUE task through Hugging Face ``datasets`` (optional; imported here only). It reads
    the user's local ``datasets`` cache, or downloads if the user's ``datasets`` is allowed to;
    nothing in this project calls it by default."""
    try:
        import datasets
    except ImportError as err:
        raise ImportError("load_glue_hf needs the optional package 'datasets'") from err
    canonical = glue_task_name(name)
    spec = GLUE_TASKS[canonical]
    data = datasets.load_dataset("glue", spec.hf_config)
    dev_split = "validation_matched" if canonical == "MNLI" else "validation"
    key_a, key_b = spec.hf_fields

    def rows(split: str) -> tuple[TextExample, ...]:
        out = []
        for i, row in enumerate(data[split]):
            label = float(row["label"])
            if spec.labels and not (label.is_integer() and 0 <= label < len(spec.labels)):
                raise ValueError(f"datasets glue/{spec.hf_config} {split} row {i}: label {label}")
            if spec.label_range and not spec.label_range[0] <= label <= spec.label_range[1]:
                raise ValueError(
                    f"datasets glue/{spec.hf_config} {split} row {i}: label {label} is outside "
                    f"[{spec.label_range[0]:g}, {spec.label_range[1]:g}]"
                )
            b = row[key_b] if key_b is not None else None
            out.append(TextExample(str(row[key_a]), None if b is None else str(b), label))
        return tuple(out)

    task = TextTask(
        canonical,
        spec.metric,
        max(len(spec.labels), 1),
        rows("train"),
        rows(dev_split),
        spec.metrics,
        spec.labels,
    )
    return task.subsample(max_train, max_dev, seed)


# --------------------------------------------------------------------------- fine-tuning


@dataclass(frozen=True)
class FinetuneResult:
    """Dev metrics after fine-tuning, the primary one, and what it cost."""

    task: str
    metric: str
    score: float
    metrics: dict[str, float]
    steps: int
    seconds: float
    train_loss: list[float] = field(default_factory=list)


def _encode(tokenizer: Any, rows: Sequence[TextExample], max_len: int) -> list[dict[str, Any]]:
    pairs = any(r.text_b is not None for r in rows)
    if pairs and any(r.text_b is None for r in rows):
        raise ValueError("a task mixes single sentences and sentence pairs")
    enc = tokenizer(
        [r.text_a for r in rows],
        [r.text_b for r in rows] if pairs else None,
        truncation=True,
        max_length=max_len,
    )
    keys = [k for k in ("input_ids", "token_type_ids", "attention_mask") if k in enc]
    return [{k: enc[k][i] for k in keys} for i in range(len(rows))]


def _collate(
    items: Sequence[dict[str, Any]], labels: np.ndarray, regression: bool
) -> dict[str, Any]:
    import torch

    width = max(len(it["input_ids"]) for it in items)
    batch: dict[str, Any] = {}
    for key in items[0]:
        arr = np.zeros((len(items), width), dtype=np.int64)
        for i, it in enumerate(items):
            arr[i, : len(it[key])] = it[key]
        batch[key] = torch.from_numpy(arr)
    dtype = torch.float32 if regression else torch.long
    batch["labels"] = torch.as_tensor(labels, dtype=dtype)
    return batch


def _logits(model: Any, batch: dict[str, Any], pooling: str) -> Any:
    """Classifier logits of ``BertForSequenceClassification`` ``model`` on ``batch`` (no
    ``labels``). ``cls``: BERT's own head (pooler on ``[CLS]``, dropout, classifier);
    ``mean``: the mean of the last hidden states over the attended tokens, then the same
    dropout and classifier (the pooler is unused)."""
    if pooling == "cls":
        return model(**batch).logits
    hidden = model.bert(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)
    return model.classifier(model.dropout(pooled))


def _predict(model: Any, encoded: list[dict[str, Any]], config: FinetuneConfig, device: Any,
             regression: bool, autocast: Any) -> np.ndarray:  # fmt: skip
    import torch

    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(encoded), config.eval_batch_size):
            items = encoded[start : start + config.eval_batch_size]
            batch = _collate(items, np.zeros(len(items)), regression)
            batch.pop("labels")
            batch = {k: v.to(device) for k, v in batch.items()}
            with autocast():
                logits = _logits(model, batch, config.pooling).float()
            out.append(logits[:, 0] if regression else logits.argmax(dim=-1))
    return torch.cat(out).cpu().numpy()


_TEXT_FINETUNE = FinetuneConfig()  # the defaults: the text recipe


def finetune(
    checkpoint: str | Path,
    tokenizer: Any,
    task: TextTask,
    *,
    config: FinetuneConfig = _TEXT_FINETUNE,
    seed: int = 0,
) -> FinetuneResult:
    """Fine-tune ``BertForSequenceClassification.from_pretrained(checkpoint)`` on
    ``task.train`` and score it on ``task.dev``. ``tokenizer``: a ``transformers`` fast
    tokenizer. The classifier's initialisation, the batch order and the dropout masks
    follow ``seed`` (the caller's torch random state is left as it was)."""
    import torch
    from transformers import BertForSequenceClassification
    from transformers.utils import logging as hf_logging

    from deep.optim import adamw, autocast_dtype, lr_factor
    from deep.optim import autocast as autocast_to

    regression = task.num_labels == 1
    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = autocast_dtype(config.precision, device)

    def autocast() -> Any:
        return autocast_to(dtype, device)

    start = time.perf_counter()
    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # "newly initialized: classifier.weight" is expected
    hf_logging.disable_progress_bar()  # no "Loading weights" bar per fine-tuning run
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = BertForSequenceClassification.from_pretrained(
                str(checkpoint),
                num_labels=task.num_labels,
                problem_type="regression" if regression else "single_label_classification",
            )
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    model.to(device)
    train_enc = _encode(tokenizer, task.train, config.max_len)
    dev_enc = _encode(tokenizer, task.dev, config.max_len)
    train_labels = np.array([e.label for e in task.train])
    per_epoch = math.ceil(len(train_enc) / config.batch_size)
    total = config.total_steps(len(train_enc))
    warmup = int(config.warmup_ratio * total)
    optimizer = adamw(model, lr=config.lr, weight_decay=config.weight_decay, device=device)

    def schedule(step: int) -> float:
        return lr_factor(
            step, steps=total, warmup_steps=warmup, lr_schedule="linear", min_lr_ratio=0.0
        )

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    rng = np.random.default_rng(seed)
    step_losses: list[Any] = []
    step = 0
    model.train()
    # dropout draws from torch's global generator: seed it too, in a fork (the caller's
    # state is restored), so that a run depends on ``seed`` alone, not on earlier runs
    # in the same process
    cuda = []
    if device.type == "cuda":
        cuda = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        while step < total:
            order = rng.permutation(len(train_enc))
            for b in range(per_epoch):
                if step >= total:
                    break
                idx = order[b * config.batch_size : (b + 1) * config.batch_size]
                batch = _collate([train_enc[i] for i in idx], train_labels[idx], regression)
                batch = {k: v.to(device) for k, v in batch.items()}
                with autocast():
                    logits = _logits(
                        model, {k: v for k, v in batch.items() if k != "labels"}, config.pooling
                    )
                logits = logits.float()
                if regression:
                    loss = torch.nn.functional.mse_loss(logits[:, 0], batch["labels"])
                else:
                    loss = torch.nn.functional.cross_entropy(logits, batch["labels"])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                step_losses.append(loss.detach())
                step += 1
    losses = torch.stack(step_losses).float().cpu().tolist()  # one device sync
    if not all(math.isfinite(x) for x in losses):
        raise FloatingPointError(f"fine-tuning on {task.name} diverged (non-finite loss)")
    preds = _predict(model, dev_enc, config, device, regression, autocast)
    labels = np.array([e.label for e in task.dev])
    if not regression:
        labels = labels.astype(np.int64)
    scores = compute_metrics(task.metrics, preds, labels)
    return FinetuneResult(
        task.name,
        task.metric,
        scores[task.metric],
        scores,
        step,
        time.perf_counter() - start,
        losses,
    )
