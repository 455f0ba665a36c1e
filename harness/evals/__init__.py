"""`harness eval`: SWE-bench-style evaluation (data sets, environments, grading, batches,
reports). Importing it loads nothing heavy: `datasets`, `swebench`, `ray` and matplotlib are
imported where they are used."""
