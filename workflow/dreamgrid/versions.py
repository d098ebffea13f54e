"""Implementation versions per stage, passed to rules as ``params: impl=``.

Snakemake does not see edits inside this package; bump a stage's number when a code change
alters its outputs, and exactly the jobs of that stage (and what depends on them) rerun.
"""

MODELS = 3
CAPTION = 1
REGULARIZATION = 1
TRAIN = 2  # single-file SD checkpoints, one resume state per arm (#3)
SAMPLE = 4  # prompts over 77 tokens encoded in chunks, not truncated
SCORE = 3
AGGREGATE = 4  # Holm families per model and prompt set
PLOTS = 5  # axis labels and limits, demo mark
