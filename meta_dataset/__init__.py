"""ringnce's Meta-Dataset evaluator: readers of Meta-Dataset's own records and specs, the episode sampler,
cached frozen features, few-shot classifiers.  Needs neither TensorFlow nor Detectron2.

The package name is the benchmark's, and Google's ``meta_dataset`` package uses it too: the commands
check ``RINGNCE`` (``transfer/entry_points.py``) so that a shadowing install is one clear error.
"""
RINGNCE = True
