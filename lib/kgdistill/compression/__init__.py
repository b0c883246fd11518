"""Compression without distillation: one-shot magnitude pruning and quantized copies (``oneshot``)
and the sparse export of a pruned student (``sparse``)."""
