"""Runtime compatibility for the Python-only Detectron2 v0.6 install (see install_detectron2.py).

``ensure()`` must run before Detectron2 is first imported; ``import_detectron2()`` does both.  Each
patch is applied only where the real thing is missing, so a full upstream build is left untouched:
- NumPy >= 1.24 removed ``np.bool/int/float`` (Detectron2 v0.6 uses them);
- Pillow >= 10 removed ``Image.LINEAR`` (used by Detectron2's ResizeTransform);
- ``detectron2._C`` (the C++ extension) is replaced by a module that imports, and whose every
  attribute raises one clear error naming the op and the fix.
"""
from __future__ import annotations

import importlib.util
import sys
import types

NO_EXTENSION_HINT = ("this Detectron2 was installed without its C++ extension (Python sources only); "
                     "install upstream Detectron2 with RINGNCE_DETECTRON2_SOURCE=<git URL or checkout> "
                     "ring-install-detectron2 --force to use it")


class MissingExtensionError(RuntimeError):
    pass


class _MissingC(types.ModuleType):
    """Stands in for detectron2._C: importing works, the environment queries answer 'not built', and
    using any op raises MissingExtensionError."""

    @staticmethod
    def get_compiler_version() -> str:
        return "not built (Python-only Detectron2)"

    @staticmethod
    def get_cuda_version() -> str:
        return "not built"

    @staticmethod
    def has_cuda() -> bool:
        return False

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        raise MissingExtensionError(f"detectron2._C.{name} is a C++ op; {NO_EXTENSION_HINT}.")


def _has_real_extension() -> bool:
    try:
        spec = importlib.util.find_spec("detectron2._C")
    except (ImportError, ValueError):
        return False
    return spec is not None and not isinstance(sys.modules.get("detectron2._C"), _MissingC)


def ensure() -> None:
    import numpy as np
    from PIL import Image

    for alias, real in (("bool", bool), ("int", int), ("float", float), ("complex", complex), ("object", object),
                        ("str", str)):
        if alias not in np.__dict__:
            setattr(np, alias, real)
    if not hasattr(Image, "LINEAR"):
        Image.LINEAR = Image.BILINEAR
    if importlib.util.find_spec("detectron2") is None:
        raise ModuleNotFoundError("Detectron2 is not installed; run ring-install-detectron2 (make setup does).")
    if "detectron2._C" not in sys.modules and not _has_real_extension():
        sys.modules["detectron2._C"] = _MissingC("detectron2._C")


def has_cpp_extension() -> bool:
    ensure()
    return not isinstance(sys.modules.get("detectron2._C"), _MissingC)


def import_detectron2():
    ensure()
    import detectron2

    return detectron2
