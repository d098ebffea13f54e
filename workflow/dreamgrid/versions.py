"""Implementation versions per stage, passed to rules as ``params: impl=``.

Snakemake does not see edits inside this package; bump a stage's number when a code change
alters its outputs, and exactly the jobs of that stage (and what depends on them) rerun.
"""

MODELS = 3
CAPTION = 1
REGULARIZATION = 1
TRAIN = 2  # single-file SD checkpoints, one resume state per arm (#3)
SAMPLE = 3
SCORE = 4  # backend and device of every embedding recorded; scoring on the CPU
AGGREGATE = 4  # Holm families per model and prompt set
PLOTS = 4
