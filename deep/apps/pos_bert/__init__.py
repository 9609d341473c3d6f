"""POS-Mask BERT (Wang et al. 2023, section 6.1): the MLM task split by part of speech.

Pipeline, each stage a module:

- :mod:`.corpus`: offline English text (Austen's six novels, shipped; or your text files)
  as paragraphs;
- :mod:`.tagging`: sentences and Universal POS tags: shipped for Austen (no tagger);
  spaCy for your text (the ``[tagger]`` extra), cached on disk (``$TASKROBUST_CACHE`` or
  ``~/.cache/taskrobust``);
- :mod:`.tokenizer`: a WordPiece tokenizer trained by ``tokenizers``; each word's tag goes
  to all its pieces; sentences packed into ``[CLS] ... [SEP]`` rows;
- :mod:`.tasks`: UPOS tags grouped into M tasks (default NOUN, VERB, ADJ, ADV, PRON, DET,
  ADP, PROPN, OTHER);
- :mod:`.masking`: 15% masking (80/10/10), each masked token tagged with its POS task;
- :mod:`.model`: ``BertForMaskedLM`` from a config, the MLM head on masked positions only,
  the per-token loss and its task ids for :func:`deep.pretrain`;
- :mod:`.pipeline`: data preparation and one pre-training run per method (``minimax``,
  ``average``, ``mlm``);
- :mod:`.suite`: built-in downstream tasks made from the corpus;
- :mod:`.experiment`: methods x seeds x downstream tasks, with the worst-case report.

Quick use::

    from deep.apps.pos_bert.pipeline import DataConfig, PretrainConfig, prepare_data, pretrain_pos_bert
    data = prepare_data(DataConfig())                      # shipped, already tagged
    run = pretrain_pos_bert(data, "minimax", PretrainConfig(steps=300), seed=0, out_dir="ckpt")
    run.checkpoint                                         # BertForMaskedLM.from_pretrained(...)
"""

from __future__ import annotations

__all__: list[str] = []
