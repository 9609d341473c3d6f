"""Planted-task language: a non-convex testbed where Section 5's assumption holds by construction.

- :mod:`.language`: the seeded generator (numpy only): token sequences whose every token
  carries a known category, category proportions under control, exact entropy floors;
- :mod:`.model`: the BERT MLM, masking, ``task_loss`` for :func:`deep.pretrain` and the
  per-category masked-token losses of a model on held-out data (the upstream task losses);
- :mod:`.downstream`: planted mixtures and category-tied classification, fine-tuning;
- :mod:`.experiment`: methods x seeds x budgets, paired statistics and dynamics.
"""

from __future__ import annotations

__all__: list[str] = []
