"""asv benchmarks of tropic (``asv run``); one module per operator family. See ``common.py``."""
