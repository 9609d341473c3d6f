"""Applications built on the :mod:`deep` engine (the engine never imports them).

- :mod:`.text`: GLUE-format reading, the GLUE metrics, BERT text fine-tuning;
- :mod:`.evaluation`: worst-case downstream statistics over seeds (WILDS-style keys), their
  table and figure (numpy only until a figure is drawn);
- :mod:`.pos_bert`: POS-Mask BERT (the MLM task split by part of speech);
- :mod:`.mae`: the multi-modal mask MAE (RGB, depth, semantic maps) and its image tasks;
- :mod:`.planted`: the planted-task language, where Section 5's assumption holds by
  construction.

Nothing is imported here: each application brings its own dependencies (``tokenizers``,
``transformers``, spaCy, Pillow) only when it is imported.
"""

from __future__ import annotations

__all__: list[str] = []
