"""The score stage: faces detected, embedded and compared with DeepFace, on the CPU.

One topic per module, laid out like deepface's own ``modules/``:

- :mod:`~dreamgrid.scoring.settings`: the config's face settings (model, detector, metric,
  alignment) as dataclasses;
- :mod:`~dreamgrid.scoring.deepface_adapter`: the only module that imports deepface: setup,
  weights prepared offline, checks of names and thresholds, detecting and embedding one image,
  ``find_distance``;
- :mod:`~dreamgrid.scoring.embedding`: reference photos, and many images at once through a
  content-hash cache and worker processes;
- :mod:`~dreamgrid.scoring.codec`: the one JSON encoding of stored faces (references, a
  shard's faces, cache entries);
- :mod:`~dreamgrid.scoring.distances`: distances to the references, score tables, their
  metadata;
- :mod:`~dreamgrid.scoring.steps`: the workflow steps named after their rules
  (``embed_references``, ``embed_renders``, ``score_faces``) and ``dreamgrid score``.

The real-photos baseline's rows are in :mod:`dreamgrid.baseline`. Import the modules
themselves; this package re-exports nothing, so importing one module stays light (deepface
is imported only when a face is first detected or compared).
"""
