"""The link-prediction metrics the study's tables show, in one place (torch-free, so that the
table modules can import it without torch)."""

#: filtered metrics of a MetaSD-paper table, in its column order (``MR`` is computed but not shown)
METRICS = ("MRR", "H@1", "H@3", "H@10")
