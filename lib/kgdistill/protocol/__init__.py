"""The run protocol every method follows: a checked, hashable config (``configbase``), the
resumable training loop (``loop``), the family registry that maps a config class to its trainer,
model builder and record fields (``registry``), and ``runner.run``. Imports only ``core``."""
