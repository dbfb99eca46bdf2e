"""Tools built on run directories: check (preflight), verify, compare (two checkpoints), report (HTML), study
(arms x seeds) and its statistics."""
