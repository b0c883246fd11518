"""MetaSD and the 1-vs-all family it is compared with: :class:`~kgdistill.metasd.config.RunConfig`
(baselines, KD, DML, MetaSD and its ablations, prune + fine-tune), the learners (``training``,
``distillation``), the meta step (``metastep``), the KL losses (``distill_losses``) and the
student's evaluation modes (``evalmodes``). Importing it registers the ``metasd`` family."""
from . import family  # noqa: F401  (registers the family)
