"""Implementation versions per stage, passed to rules as ``params: impl=``.

Snakemake does not see edits inside this package; bump a stage's number when a code change
alters its outputs, and exactly the jobs of that stage (and what depends on them) rerun.
"""

MODELS = 3
CAPTION = 1
REGULARIZATION = 1
TRAIN = 2  # single-file SD checkpoints, one resume state per arm
SAMPLE = 4  # prompts over 77 tokens encoded in chunks, not truncated
SCORE = 4  # backend and device of every embedding recorded; scoring on the CPU
AGGREGATE = 5  # permutation + BCa, planned vs exploratory families, verdict.json
PLOTS = 5  # axis labels and limits, demo mark
MEMORIZATION = 1  # renders against the training photos
FINDER = 1  # minimum face count, pairwise consistency, interval per name
SEARCH = 1  # the decision of each look (dreamgrid.adaptive, dreamgrid.search)
