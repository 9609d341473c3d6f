"""POS-Mask BERT end to end: data, pre-training with each method, held-out POS losses,
fine-tuning on downstream tasks.

Pre-training methods (one code path, :func:`deep.pretrain`, the same masked batches for a
given seed):

============  ==========================================  =============================
method        tasks and rule                               objective
============  ==========================================  =============================
``minimax``   M POS tasks, ``softmax(temperature)``        ``~ max_i L_i`` (the paper)
``average``   M POS tasks, ``uniform()``                   ``mean_i L_i``
``mlm``       one task (every masked token), ``uniform()`` token mean (standard BERT)
============  ==========================================  =============================

``L_i`` is the mean MLM cross-entropy over the masked tokens whose word has a tag in POS
group ``i``. A :class:`~deep.apps.pos_bert.model.PosLossMonitor` records the per-POS training
losses of every method (the ``mlm`` run included), and :func:`heldout_pos_losses` measures
them on held-out paragraphs with fixed masks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from deep.io import atomic_path

from .corpus import AUSTEN_EXCERPT_WORDS, cache_dir, load_corpus, truncate_documents
from .masking import MaskingConfig, MlmBatches
from .model import (
    MaskedPositionsMLM,
    PosLossMonitor,
    bert_config,
    make_mlm_model,
    mlm_task_loss,
    save_pretrained_atomic,
)
from .suite import is_heldout
from .tagging import TaggedCorpus, Tagger, build_tagged_corpus, load_tagged_austen
from .tasks import PosTasks, parse_tasks, single_task
from .tokenizer import EncodedCorpus, build_tokenizer, hf_tokenizer, load_tokenizer, pack_sequences

__all__ = [
    "METHODS",
    "DataConfig",
    "MethodSetup",
    "PosBertData",
    "PretrainConfig",
    "PretrainOutcome",
    "heldout_pos_losses",
    "load_bundle",
    "method_setup",
    "prepare_data",
    "pretrain_pos_bert",
    "save_bundle",
    "truncate_documents",
]

METHODS = ("minimax", "average", "mlm")
DEFAULT_TASK_SPEC = "NOUN,VERB,ADJ,ADV,PRON,DET,ADP,PROPN,OTHER"


@dataclass(frozen=True)
class DataConfig:
    """Corpus (``austen-excerpt``, ``austen`` or ``files`` with ``text_files``), at most
    ``words_per_document`` words of each document, tokenizer vocabulary, sequence length,
    cache folder (default ``$TASKROBUST_CACHE`` or ``~/.cache/taskrobust``, + ``pos_bert``)."""

    corpus: str = "austen-excerpt"
    text_files: tuple[str, ...] = ()
    words_per_document: int | None = None
    vocab_size: int = 8000
    max_len: int = 128
    cache: str | None = None

    def __post_init__(self) -> None:
        if self.words_per_document is not None and self.words_per_document < 100:
            raise ValueError(f"words_per_document must be >= 100, got {self.words_per_document}")
        if self.max_len < 8:
            raise ValueError(f"max_len must be >= 8, got {self.max_len}")

    @property
    def cache_folder(self) -> Path:
        return Path(self.cache) if self.cache else cache_dir() / "pos_bert"


class PosBertData(NamedTuple):
    """The tagged corpus, its tokenizer (``tokenizers.Tokenizer``), packed pre-training
    rows (non-held-out paragraphs) and packed held-out rows."""

    corpus: TaggedCorpus
    tokenizer: Any
    train: EncodedCorpus
    heldout: EncodedCorpus

    @property
    def vocab_size(self) -> int:
        return int(self.tokenizer.get_vocab_size())

    def hf_tokenizer(self) -> Any:
        return hf_tokenizer(self.tokenizer, model_max_length=self.train.input_ids.shape[1])


def _encode(
    corpus: TaggedCorpus, tokenizer: Any, max_len: int
) -> tuple[EncodedCorpus, EncodedCorpus]:
    train = [s for s in corpus.sentences if not is_heldout(s)]
    heldout = [s for s in corpus.sentences if is_heldout(s)]
    if not train or not heldout:
        raise ValueError(
            "the corpus is too small: it needs paragraphs both for pre-training and held out "
            "(every tenth paragraph of a document is held out)"
        )
    return pack_sequences(tokenizer, train, max_len), pack_sequences(tokenizer, heldout, max_len)


def prepare_data(
    config: DataConfig = DataConfig(), *, tagger: Tagger | None = None, progress: bool = True
) -> PosBertData:
    """Load and tag the corpus, train the tokenizer (cached) and pack the corpus.

    The Austen corpora come tagged with the package (no tagger); ``corpus="files"`` (or any
    corpus with an explicit ``tagger``) is tagged once and cached.
    """
    if config.corpus in ("austen", "austen-excerpt") and tagger is None and not config.text_files:
        words = config.words_per_document
        if config.corpus == "austen-excerpt":
            words = min(words or AUSTEN_EXCERPT_WORDS, AUSTEN_EXCERPT_WORDS)
        corpus = load_tagged_austen(words)
    else:
        documents = load_corpus(config.corpus, config.text_files)
        if config.words_per_document is not None:
            documents = truncate_documents(documents, config.words_per_document)
        corpus = build_tagged_corpus(
            documents, tagger=tagger, cache=config.cache_folder, progress=progress
        )
    tokenizer = build_tokenizer(corpus, config.vocab_size, cache=config.cache_folder)
    train, heldout = _encode(corpus, tokenizer, config.max_len)
    return PosBertData(corpus, tokenizer, train, heldout)


def save_bundle(data: PosBertData, folder: Path) -> Path:
    """Write ``tagged.json.gz`` and ``tokenizer.json`` (what a machine without spaCy needs)."""
    folder = Path(folder)
    data.corpus.save(folder / "tagged.json.gz")
    with atomic_path(folder / "tokenizer.json") as tmp:
        data.tokenizer.save(str(tmp))
    return folder


def load_bundle(folder: Path, max_len: int = 128) -> PosBertData:
    """Read a :func:`save_bundle` folder and pack it (no tagger needed)."""
    folder = Path(folder)
    for name in ("tagged.json.gz", "tokenizer.json"):
        if not (folder / name).is_file():
            raise ValueError(f"bundle folder {folder} has no {name} (build it with save_bundle)")
    corpus = TaggedCorpus.load(folder / "tagged.json.gz")
    tokenizer = load_tokenizer(folder / "tokenizer.json")
    train, heldout = _encode(corpus, tokenizer, max_len)
    return PosBertData(corpus, tokenizer, train, heldout)


@dataclass(frozen=True)
class PretrainConfig:
    """Pre-training hyper-parameters shared by every method."""

    size: str = "tiny"
    steps: int = 300
    batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int = 30
    lr_schedule: str = "cosine"
    temperature: float = 0.5
    task_spec: str = DEFAULT_TASK_SPEC
    log_every: int = 10
    device: str | None = None
    precision: str = "auto"
    masking: MaskingConfig = field(default_factory=MaskingConfig)

    @property
    def tasks(self) -> PosTasks:
        return parse_tasks(self.task_spec)


class MethodSetup(NamedTuple):
    """How a pre-training method runs: the weight ``rule``, whether the masked tokens are
    split into the POS tasks (``per_pos_task``; else one MLM task), the number of tasks and
    their names."""

    rule: Any
    per_pos_task: bool
    num_tasks: int
    task_names: list[str]


def method_setup(method: str, config: PretrainConfig) -> MethodSetup:
    """The :class:`MethodSetup` of ``method`` (one of :data:`METHODS`)."""
    from minimax_core.weights import softmax, uniform

    tasks = config.tasks
    if method == "minimax":
        return MethodSetup(softmax(config.temperature), True, tasks.num_tasks, list(tasks.names))
    if method == "average":
        return MethodSetup(uniform(), True, tasks.num_tasks, list(tasks.names))
    if method == "mlm":
        return MethodSetup(uniform(), False, 1, list(single_task().names))
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


@dataclass(frozen=True)
class PretrainOutcome:
    """One pre-training run: the checkpoint (``from_pretrained``-loadable), the engine's
    history, the per-POS training losses of the monitor (every method), held-out per-POS
    losses, and wall time."""

    method: str
    seed: int
    checkpoint: Path
    history: dict[str, np.ndarray]
    pos_history: dict[str, np.ndarray]
    heldout_losses: np.ndarray
    mean_weights: np.ndarray
    seconds: float


def heldout_pos_losses(
    model: MaskedPositionsMLM,
    data: PosBertData,
    tasks: PosTasks,
    *,
    batch_size: int = 64,
    seed: int = 12345,
    config: MaskingConfig | None = None,
    device: torch.device | None = None,
    return_counts: bool = False,
) -> Any:
    """Mean MLM loss per POS task on the held-out rows, with masks fixed by ``seed`` (the
    same masked tokens for every model). NaN for a task with no masked token. With
    ``return_counts``: ``(losses, counts)``, the masked tokens per task too."""
    device = device or next(model.parameters()).device
    stream = MlmBatches(
        data.heldout,
        tasks,
        batch_size=min(batch_size, data.heldout.input_ids.shape[0]),
        vocab_size=data.vocab_size,
        seed=seed,
        masking=config or MaskingConfig(),
        shuffle=False,
    )
    sums = torch.zeros(tasks.num_tasks, dtype=torch.float64)
    counts = torch.zeros(tasks.num_tasks, dtype=torch.float64)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for k in range(max(1, stream.per_epoch)):
            batch = {key: v.to(device) for key, v in stream.batch(k).items()}
            logits = model(batch["input_ids"], batch["attention_mask"], batch["mask_index"])
            losses = F.cross_entropy(logits.float(), batch["labels"], reduction="none").double()
            ids = batch["pos_task"]
            sums += torch.zeros_like(sums).index_add_(0, ids.cpu(), losses.cpu())
            counts += torch.zeros_like(counts).index_add_(
                0, ids.cpu(), torch.ones_like(losses.cpu())
            )
    model.train(was_training)
    out = (sums / counts.clamp_min(1)).numpy()
    losses = np.where(counts.numpy() > 0, out, np.nan)
    return (losses, counts.numpy()) if return_counts else losses


def pretrain_pos_bert(
    data: PosBertData,
    method: str,
    config: PretrainConfig,
    *,
    seed: int,
    out_dir: Path,
    progress: bool = False,
) -> PretrainOutcome:
    """Pre-train a fresh BERT (weights from ``seed``) with ``method``; save it to
    ``out_dir/METHOD-seedSEED`` (model + tokenizer, ``from_pretrained``-loadable)."""
    import deep

    setup = method_setup(method, config)
    tasks = config.tasks
    max_len = data.train.input_ids.shape[1]
    mlm = make_mlm_model(
        bert_config(config.size, vocab_size=data.vocab_size, max_len=max_len), seed=seed
    )
    model = MaskedPositionsMLM(mlm)
    log_every = max(1, min(config.log_every, config.steps))
    monitor = PosLossMonitor(tasks.num_tasks, every=log_every)
    batches = MlmBatches(
        data.train,
        tasks,
        batch_size=min(config.batch_size, data.train.input_ids.shape[0]),
        vocab_size=data.vocab_size,
        seed=seed,
        masking=config.masking,
    )
    start = time.perf_counter()
    result = deep.pretrain(
        model,
        batches,
        num_tasks=setup.num_tasks,
        task_loss=mlm_task_loss(per_pos_task=setup.per_pos_task, monitor=monitor),
        rule=setup.rule,
        steps=config.steps,
        lr=config.lr,
        warmup_steps=min(config.warmup_steps, config.steps),
        lr_schedule=config.lr_schedule,
        device=config.device,
        precision=config.precision,
        seed=seed,
        log_every=log_every,
        progress=progress,
        task_names=setup.task_names,
    )
    seconds = time.perf_counter() - start
    trained = result.model
    heldout = heldout_pos_losses(trained, data, tasks)
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Writing model shards" bar on every save
    try:
        path = save_pretrained_atomic(
            trained.mlm, Path(out_dir) / f"{method}-seed{seed}", tokenizer=data.hf_tokenizer()
        )
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return PretrainOutcome(
        method,
        seed,
        path,
        {k: np.asarray(v) for k, v in result.history.items()},
        monitor.history(),
        heldout,
        np.asarray(result.mean_weights),
        seconds,
    )
