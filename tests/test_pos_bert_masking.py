"""POS tasks, masking statistics, task ids of masked tokens, the task loss and its monitor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deep.apps.pos_bert.masking import MASK_ID, NUM_SPECIAL, MaskingConfig, MlmBatches, mask_tokens
from deep.apps.pos_bert.model import (
    MaskedPositionsMLM,
    PosLossMonitor,
    bert_config,
    make_mlm_model,
    mlm_task_loss,
)
from deep.apps.pos_bert.tagging import UPOS_TAGS
from deep.apps.pos_bert.tasks import DEFAULT_TASKS, parse_tasks, single_task
from deep.apps.pos_bert.tokenizer import EncodedCorpus

VOCAB = 50


def test_default_tasks_follow_the_paper_and_cover_every_tag():
    assert DEFAULT_TASKS.names == (
        "NOUN", "VERB", "ADJ", "ADV", "PRON", "DET", "ADP", "PROPN", "OTHER",
    )  # fmt: skip
    table = DEFAULT_TASKS.lookup()
    assert np.all(table >= 0)
    assert table[UPOS_TAGS.index("NOUN")] == 0 and table[UPOS_TAGS.index("PROPN")] == 7
    other = {UPOS_TAGS[i] for i in np.flatnonzero(table == 8)}
    assert other == {"AUX", "CCONJ", "INTJ", "NUM", "PART", "PUNCT", "SCONJ", "SYM", "X"}


def test_custom_grouping_and_single_task():
    tasks = parse_tasks("NOUN+PROPN, VERB+AUX, OTHER")
    assert tasks.names == ("NOUN+PROPN", "VERB+AUX", "OTHER")
    ids = tasks.task_ids(np.array([[-1, UPOS_TAGS.index("PROPN"), UPOS_TAGS.index("AUX"), 0]]))
    assert ids.tolist() == [[-1, 0, 1, 2]]
    assert single_task().num_tasks == 1
    assert np.all(single_task().lookup() == 0)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("", "non-empty"),
        ("NOUN,NOUN,OTHER", "repeated"),
        ("NOUN,WORD,OTHER", "not a Universal POS tag"),
        ("NOUN,NOUN+VERB,OTHER", "in two groups"),
        ("NOUN,VERB", "in no group"),
        ("+".join(UPOS_TAGS) + ",OTHER", "would be empty"),
    ],
)
def test_bad_task_specs(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_tasks(spec)


def _random_batch(rows=64, length=48, seed=0):
    """Rows with [CLS] .. [SEP] [PAD]..; token tasks drawn with skewed frequencies."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(NUM_SPECIAL, VOCAB, size=(rows, length))
    tasks = rng.choice(9, size=(rows, length), p=[0.3, 0.2, 0.1, 0.1, 0.1, 0.08, 0.06, 0.04, 0.02])
    lengths = rng.integers(length // 2, length + 1, size=rows)
    for r, n in enumerate(lengths):
        ids[r, 0], ids[r, n - 1], ids[r, n:] = 2, 3, 0
        tasks[r, 0], tasks[r, n - 1:] = -1, -1  # fmt: skip
    return torch.from_numpy(ids), torch.from_numpy(tasks.astype(np.int64))


def test_mask_rate_is_fifteen_percent_in_every_pos_group():
    selected = np.zeros(9)
    total = np.zeros(9)
    for seed in range(40):
        ids, tasks = _random_batch(seed=seed)
        out = mask_tokens(
            ids, tasks, vocab_size=VOCAB, generator=torch.Generator().manual_seed(seed)
        )
        selected += np.bincount(out["pos_task"].numpy(), minlength=9)
        total += np.bincount(tasks[tasks >= 0].numpy(), minlength=9)
    rate = selected / total
    # binomial: 5 standard deviations around 0.15 in each group
    tolerance = 5 * np.sqrt(0.15 * 0.85 / total)
    assert np.all(np.abs(rate - 0.15) < tolerance), (rate, tolerance)
    assert total.min() > 1000


def test_masked_tokens_get_their_pos_task_label_and_the_80_10_10_rule():
    kept = masked = randomised = 0
    for seed in range(30):
        ids, tasks = _random_batch(seed=seed)
        out = mask_tokens(
            ids, tasks, vocab_size=VOCAB, generator=torch.Generator().manual_seed(seed)
        )
        index = out["mask_index"]
        assert torch.equal(out["labels"], ids.flatten()[index])
        assert torch.equal(out["pos_task"], tasks.flatten()[index])
        assert bool((tasks.flatten()[index] >= 0).all())  # never [CLS]/[SEP]/[PAD]
        corrupted = out["input_ids"].flatten()
        unselected = torch.ones_like(corrupted, dtype=torch.bool)
        unselected[index] = False
        assert torch.equal(corrupted[unselected], ids.flatten()[unselected])
        got = corrupted[index]
        masked += int((got == MASK_ID).sum())
        same = got == out["labels"]
        kept += int(same.sum())
        randomised += int(((got != MASK_ID) & ~same).sum())
        assert bool((got[got != MASK_ID] >= NUM_SPECIAL).all())
        assert torch.equal(out["attention_mask"], (ids != 0).long())
    n = masked + kept + randomised
    # a random replacement equals the original with probability 1/(V-5): counted as kept
    assert abs(masked / n - 0.8) < 0.02
    assert abs(kept / n - (0.1 + 0.1 / (VOCAB - NUM_SPECIAL))) < 0.02
    assert abs(randomised / n - 0.1 * (1 - 1 / (VOCAB - NUM_SPECIAL))) < 0.02


def test_at_least_one_token_is_masked():
    ids = torch.tensor([[2, 7, 3, 0]])
    tasks = torch.tensor([[-1, 4, -1, -1]])
    for seed in range(20):
        out = mask_tokens(
            ids, tasks, vocab_size=VOCAB, generator=torch.Generator().manual_seed(seed)
        )
        assert out["mask_index"].tolist() == [1] and out["pos_task"].tolist() == [4]


def test_masking_config_is_checked():
    with pytest.raises(ValueError, match="rate"):
        MaskingConfig(rate=1.5)
    with pytest.raises(ValueError, match="mask_prob \\+ random_prob"):
        MaskingConfig(mask_prob=0.95, random_prob=0.1)
    with pytest.raises(ValueError, match="both"):
        mask_tokens(
            torch.zeros(2, 3, dtype=torch.long),
            torch.zeros(2, 4, dtype=torch.long),
            vocab_size=VOCAB,
            generator=torch.Generator(),
        )


def _encoded(rows=20, length=16, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(NUM_SPECIAL, VOCAB, size=(rows, length))
    upos = rng.integers(0, len(UPOS_TAGS), size=(rows, length)).astype(np.int8)
    ids[:, 0], ids[:, -1] = 2, 3
    upos[:, 0], upos[:, -1] = -1, -1
    return EncodedCorpus(ids, upos, np.zeros(rows, dtype=np.int64))


def test_batch_stream_is_a_pure_function_of_seed_and_position():
    stream = MlmBatches(_encoded(), DEFAULT_TASKS, batch_size=6, vocab_size=VOCAB, seed=3)
    assert stream.per_epoch == 3
    it = stream(0)
    first = [next(it) for _ in range(7)]
    for k in (0, 4, 6):
        again = stream.batch(k)
        for key in again:
            assert torch.equal(again[key], first[k][key])
    resumed = next(stream(5))
    assert torch.equal(resumed["input_ids"], first[5]["input_ids"])
    other = MlmBatches(_encoded(), DEFAULT_TASKS, batch_size=6, vocab_size=VOCAB, seed=4)
    assert not torch.equal(other.batch(0)["input_ids"], first[0]["input_ids"])
    with pytest.raises(ValueError, match="batch_size"):
        MlmBatches(_encoded(), DEFAULT_TASKS, batch_size=21, vocab_size=VOCAB)


@pytest.fixture(scope="module")
def tiny_model():
    cfg = bert_config("tiny", vocab_size=VOCAB, max_len=16)
    return MaskedPositionsMLM(make_mlm_model(cfg, seed=0)).eval()  # no dropout: comparable


def test_task_loss_runs_the_head_on_masked_positions_only(tiny_model):
    stream = MlmBatches(_encoded(), DEFAULT_TASKS, batch_size=8, vocab_size=VOCAB, seed=0)
    batch = stream.batch(0)
    k = batch["mask_index"].numel()
    monitor = PosLossMonitor(DEFAULT_TASKS.num_tasks, every=1)
    losses, ids = mlm_task_loss(per_pos_task=True, monitor=monitor)(tiny_model, batch)
    assert losses.shape == (k,) and torch.equal(ids, batch["pos_task"])
    assert losses.requires_grad and bool(torch.isfinite(losses).all())
    # about log V at initialisation
    assert abs(float(losses.detach().mean()) - np.log(VOCAB)) < 1.0
    # the same logits as the full MLM head, at the masked positions
    full = tiny_model.mlm(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
    ).logits
    picked = full.reshape(-1, VOCAB)[batch["mask_index"]]
    ref = torch.nn.functional.cross_entropy(picked, batch["labels"], reduction="none")
    torch.testing.assert_close(losses, ref)
    _, mlm_ids = mlm_task_loss(per_pos_task=False, monitor=monitor)(tiny_model, batch)
    assert bool((mlm_ids == 0).all())
    hist = monitor.history()
    assert hist["task_losses"].shape == (2, 9) and hist["call"].tolist() == [1, 2]
    counts = np.bincount(batch["pos_task"].numpy(), minlength=9)
    assert hist["counts"][0].tolist() == counts.tolist()
    expected = [
        float(losses.detach()[batch["pos_task"] == t].mean()) for t in range(9) if counts[t]
    ]
    np.testing.assert_allclose(hist["task_losses"][0][counts > 0], expected, rtol=1e-5)
    assert np.all(np.isnan(hist["task_losses"][0][counts == 0]))


def test_model_sizes_and_configs():
    cfg = bert_config("mini", vocab_size=100, max_len=64, hidden_dropout_prob=0.0)
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads) == (4, 256, 4)
    assert cfg.hidden_dropout_prob == 0.0 and cfg.max_position_embeddings == 64
    with pytest.raises(ValueError, match="size must be one of"):
        bert_config("huge", vocab_size=100)
