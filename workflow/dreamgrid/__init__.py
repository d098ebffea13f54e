"""dreamgrid: which DreamBooth recipe gives the best likeness, in the fewest steps.

Importing the package needs only the standard library; each stage imports its heavy
dependencies (torch, diffusers, deepface) itself.
"""

__version__ = "0.1.0"
