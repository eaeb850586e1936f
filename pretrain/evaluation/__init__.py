"""Evaluation of frozen backbones: ``load_backbone`` (pretrained.py), features and their cache (features.py),
kNN and the kNN monitor hook (knn.py), the linear probe (linear.py) and its protocols (protocols.py).

Nothing is imported here, so that a module needing one piece does not load the rest."""
