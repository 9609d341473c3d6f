"""Downstream tasks of the planted language and budgeted fine-tuning.

Two kinds (lower is better for both):

- ``mixture``: MLM on a corpus sampled with category proportions ``lambda`` (a simplex
  vertex or a Dirichlet draw). Its loss is ``sum_c lambda_c L_c``, a convex combination of
  the upstream task losses by construction (Section 5's assumption, exact). Reported as the
  *excess* loss over the known floor, ``sum_c lambdahat_c (L_c - floor_c)`` with
  ``lambdahat`` the held-out set's masked-category shares, so that the high-entropy
  category's irreducible floor does not decide which task is "worst".
- ``classification``: the parity of one hidden feature of the subject token, from the
  sequence with the subject token replaced by ``[MASK]``. Only the tied agreement
  category's tokens carry the feature (the relation to the upstream task is approximate:
  a sequence without such a token is a coin flip). The corpus over-samples the tied
  category (share ``tied_share``). Bayes error: ``0.5 * P(no token of the category)``,
  measured on the held-out set (with the default ``tied_share = 0.25`` and 24 body tokens,
  about 0.1%: the relation is nearly exact, and 40 fine-tuning steps from any of the
  pre-trained encoders learn it). Reported as the error rate.

Fine-tuning (:func:`finetune`): from a pre-trained model, AdamW at a constant learning
rate (so the model after ``k`` steps is what a run with budget ``k`` gives) on ``n``
labelled sequences in batches of ``min(batch_size, n)``; evaluated on a held-out set at
every budget of a sorted list (budget 0 is the pre-trained point: for a classifier, its
fresh head, i.e. chance). Every random choice (head initialisation, batch order, masks) is
a function of the seed, so all pre-training methods see the same fine-tuning data.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..pos_bert.model import MaskedPositionsMLM
from .language import MASK_ID, PAD_ID, Grammar, Sample, dirichlet_mixtures, sample_sequences, vertex
from .model import MaskedSet, PlantedBatches, category_losses, masked_set, planted_task_loss

__all__ = [
    "DownstreamTask",
    "FinetuneBudgets",
    "FinetuneCurve",
    "classification_inputs",
    "default_tasks",
    "finetune",
]

KINDS = ("mixture", "classification")


@dataclass(frozen=True)
class DownstreamTask:
    """``mixture``: ``proportions`` (K,); ``classification``: ``feature`` (the subject feature
    whose parity is the label) and ``category`` (its agreement category, over-sampled to
    ``tied_share`` of the clauses)."""

    name: str
    kind: str
    proportions: tuple[float, ...] = ()
    feature: int = -1
    category: int = -1
    tied_share: float = 0.25

    def corpus_proportions(self, grammar: Grammar) -> np.ndarray:
        if self.kind == "mixture":
            return np.asarray(self.proportions, dtype=np.float64)
        p = grammar.spec.proportions.copy()
        p[self.category] = 0.0
        p = p / p.sum() * (1.0 - self.tied_share)
        p[self.category] = self.tied_share
        return p


def default_tasks(
    grammar: Grammar, *, mixtures: int, seed: int, alpha: float = 1.0
) -> tuple[DownstreamTask, ...]:
    """Every simplex vertex, ``mixtures`` Dirichlet(``alpha``) mixtures (seeded), and one
    classification task per agreement category."""
    K, names = grammar.num_categories, grammar.category_names
    tasks = [DownstreamTask(f"only:{names[c]}", "mixture", tuple(vertex(K, c))) for c in range(K)]
    for j, lam in enumerate(dirichlet_mixtures(K, mixtures, alpha=alpha, seed=[seed, 17])):
        tasks.append(DownstreamTask(f"mix{j}", "mixture", tuple(float(x) for x in lam)))
    for c, cat in enumerate(grammar.spec.categories):
        if cat.kind == "agreement":
            tasks.append(
                DownstreamTask(
                    f"parity:{cat.name}", "classification", feature=cat.feature, category=c
                )
            )
    return tuple(tasks)


@dataclass(frozen=True)
class FinetuneBudgets:
    """Budgets (optimizer steps, sorted, may include 0), learning rate and batch size."""

    budgets: tuple[int, ...] = (0, 10, 40)
    lr: float = 1e-3
    batch_size: int = 32
    heldout: int = 512

    def __post_init__(self) -> None:
        if (
            not self.budgets
            or list(self.budgets) != sorted(set(self.budgets))
            or self.budgets[0] < 0
        ):
            raise ValueError(
                f"budgets must be distinct non-negative integers in increasing order, got {self.budgets}"
            )
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.batch_size < 1 or self.heldout < 1:
            raise ValueError("batch_size and heldout must be >= 1")


def classification_inputs(sample: Sample, feature: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, labels)``: the subject token (position 1) replaced by ``[MASK]``; label
    the parity of the subject's ``feature``."""
    tokens = torch.from_numpy(sample.tokens.copy())
    tokens[:, 1] = MASK_ID
    labels = torch.from_numpy(sample.subject_features[:, feature] % 2)
    return tokens, labels


class _Classifier(torch.nn.Module):
    """The pre-trained BERT encoder, a mean over non-pad positions, a linear head."""

    def __init__(self, mlm: MaskedPositionsMLM, seed: int) -> None:
        super().__init__()
        self.bert = mlm.mlm.bert
        hidden = self.bert.config.hidden_size
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.head = torch.nn.Linear(hidden, 2)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        mask = (input_ids != PAD_ID).long()
        h = self.bert(input_ids=input_ids, attention_mask=mask).last_hidden_state
        pooled = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        return self.head(pooled)


@dataclass(frozen=True)
class FinetuneCurve:
    """``values[b]`` at ``budgets[b]`` (excess loss or error rate); ``floor``: the Bayes
    error of a classification task on its held-out set (0 for mixtures: already excess)."""

    budgets: tuple[int, ...]
    values: tuple[float, ...]
    floor: float


def _mixture_eval(model: MaskedPositionsMLM, held: MaskedSet, floors: np.ndarray) -> float:
    cl = category_losses(model, held)
    present = cl.counts > 0
    share = cl.counts[present] / cl.counts.sum()
    return float((share * (cl.losses[present] - floors[present])).sum())


@torch.no_grad()
def _error_rate(model: _Classifier, tokens: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    wrong = 0
    for i in range(0, tokens.shape[0], 256):
        wrong += int((model(tokens[i : i + 256]).argmax(-1) != labels[i : i + 256]).sum())
    model.train()
    return wrong / tokens.shape[0]


def finetune(
    pretrained: MaskedPositionsMLM,
    grammar: Grammar,
    task: DownstreamTask,
    *,
    samples: int,
    config: FinetuneBudgets,
    seed: int,
) -> FinetuneCurve:
    """Fine-tune a copy of ``pretrained`` on ``samples`` sequences of ``task``; the held-out
    metric at every budget of ``config``. ``seed`` fixes the data, masks, head and order."""
    if task.kind not in KINDS:
        raise ValueError(f"task.kind must be one of {KINDS}, got {task.kind!r}")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be an integer >= 1, got {samples!r}")
    p = task.corpus_proportions(grammar)
    train = sample_sequences(grammar, samples, seed=[seed, 1], proportions=p)
    test = sample_sequences(grammar, config.heldout, seed=[seed, 2], proportions=p)
    batch = min(config.batch_size, samples)
    model = copy.deepcopy(pretrained)
    model.train()
    values: list[float] = []
    if task.kind == "mixture":
        floors = grammar.floors
        held = masked_set(test, grammar, seed=seed)
        stream = PlantedBatches(train, grammar, batch_size=batch, seed=seed)
        loss_fn = planted_task_loss(per_category=False)
        net: torch.nn.Module = model

        def step_loss(k: int) -> torch.Tensor:
            values_k, _ = loss_fn(model, stream.batch(k))
            return values_k.mean()

        def evaluate() -> float:
            return _mixture_eval(model, held, floors)

        floor = 0.0
    else:
        net = _Classifier(model, seed)
        x_train, y_train = classification_inputs(train, task.feature)
        x_test, y_test = classification_inputs(test, task.feature)
        per_epoch = samples // batch

        def step_loss(k: int) -> torch.Tensor:
            epoch, j = divmod(k, per_epoch)
            order = np.random.default_rng([seed, 3, epoch]).permutation(samples)
            rows = torch.from_numpy(order[j * batch : (j + 1) * batch])
            return F.cross_entropy(net(x_train[rows]), y_train[rows])

        def evaluate() -> float:
            return _error_rate(net, x_test, y_test)  # type: ignore[arg-type]

        absent = ~np.any(test.categories == task.category, axis=1)
        floor = 0.5 * float(absent.mean())
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=0.0)
    done = 0
    for budget in config.budgets:
        while done < budget:
            loss = step_loss(done)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            done += 1
        values.append(evaluate())
    return FinetuneCurve(tuple(config.budgets), tuple(values), floor)
