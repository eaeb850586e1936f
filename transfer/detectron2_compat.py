"""Is a usable Detectron2 installed?  ``ensure()`` answers before Detectron2 is first needed, with one sentence
naming the fix when it is missing or is an earlier Python-only build of ours.

Nothing is patched at import: ``ring-install-detectron2`` applies every compatibility fix to the installed
sources (``transfer/detectron2_patches.py``), so any script in the environment imports Detectron2 as is.
"""
from __future__ import annotations

import importlib.util


def ensure() -> None:
    if importlib.util.find_spec("detectron2") is None:
        raise ModuleNotFoundError("Detectron2 is not installed; run ring-install-detectron2 (make setup does).")
    from transfer.install_detectron2 import OURS, PYONLY_VERSION, installed_version

    have = installed_version()
    if have and have.startswith(OURS) and have != PYONLY_VERSION:
        raise ModuleNotFoundError(f"Detectron2 {have} is an earlier build of ring-install-detectron2, without the "
                                  f"current patches; run ring-install-detectron2 (make setup does) to get "
                                  f"{PYONLY_VERSION}.")


def has_cpp_extension() -> bool:
    """False on the Python-only install (its ``detectron2._C`` is the stand-in the installer wrote)."""
    ensure()
    from detectron2 import _C

    return not getattr(_C, "PYTHON_ONLY", False)


def import_detectron2():
    ensure()
    import detectron2

    return detectron2
