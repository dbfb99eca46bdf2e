"""Infrastructure every stage and tool stands on: the typed recipe (config, typed_yaml), the run directory and its
atomic writes (rundir, atomic, rows, integrity, runs, runlock), processes under a launcher (dist), seeding, the
environment record, models and prompt rendering, duplicate detection (dedup: select's samples, propose's prompts),
trainer arguments, tracking and the user-facing errors."""
