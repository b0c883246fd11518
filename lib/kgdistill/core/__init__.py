"""What every run needs and no method owns: the process environment, benchmark datasets, the
1-vs-all backbones, regularizers, magnitude pruning, filtered evaluation, run records and timing.
Imports nothing else of kgdistill."""
