"""The changes ``ring-install-detectron2`` makes to Detectron2 v0.6's Python sources before installing them, so
that the installed package works for *any* script in the environment (``import detectron2.data``,
Detectron2's own ``tools/train_net.py``), not only through our commands:

- NumPy >= 1.24 removed the aliases ``np.bool/int/float/complex/object/str``: replaced by the builtins;
- Pillow >= 10 removed ``Image.LINEAR``: replaced by ``Image.BILINEAR`` (the same filter);
- ``detectron2/_C.py`` stands in for the C++ extension the sdist does not ship: it imports, answers the
  environment queries ("not built"), and any op raises ``MissingExtensionError`` naming the op and the fix;
- ``COCOEvaluator`` (whose default is the fast C++ evaluator) falls back to pycocotools' official
  ``COCOeval`` when the extension is absent, and says so in its log.

Each patch names the exact text it replaces in the pinned sdist; if that text is not there (another
release), installation stops instead of installing a half-patched Detectron2.
"""
from __future__ import annotations

import re
from pathlib import Path

NUMPY_ALIASES = re.compile(r"\bnp\.(bool|int|float|complex|object|str)\b")

EXTENSION_STUB = '''"""Stand-in for Detectron2's C++ extension (written by ringnce's ring-install-detectron2): the Python-only
install lacks it.  Importing works; every op raises MissingExtensionError naming the op and the fix."""

PYTHON_ONLY = True
HINT = ("this Detectron2 was installed without its C++ extension (Python sources only); install upstream "
        "Detectron2 with RINGNCE_DETECTRON2_SOURCE=<git URL or checkout> ring-install-detectron2 --force to use it")


class MissingExtensionError(RuntimeError):
    pass


def get_compiler_version():
    return "not built (Python-only Detectron2)"


def get_cuda_version():
    return "not built"


def has_cuda():
    return False


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    raise MissingExtensionError(f"detectron2._C.{name} is a C++ op; {HINT}.")
'''

# (file under detectron2/, the exact original text, its replacement)
TEXT_PATCHES = [
    ("evaluation/coco_evaluation.py",
     "        self._use_fast_impl = use_fast_impl\n",
     "        from detectron2 import _C as _extension\n"
     "        if use_fast_impl and getattr(_extension, \"PYTHON_ONLY\", False):  # ringnce: no C++ evaluator here\n"
     "            self._logger.info(\"COCOEvaluator: the fast C++ evaluator is not built; using pycocotools' \"\n"
     "                              \"official COCOeval.\")\n"
     "            use_fast_impl = False\n"
     "        self._use_fast_impl = use_fast_impl\n"),
    ("evaluation/coco_evaluation.py",
     "    coco_eval = (COCOeval_opt if use_fast_impl else COCOeval)(coco_gt, coco_dt, iou_type)\n",
     "    from detectron2 import _C as _extension  # ringnce: the fast evaluator only where it is built\n"
     "    use_fast_impl = use_fast_impl and not getattr(_extension, \"PYTHON_ONLY\", False)\n"
     "    coco_eval = (COCOeval_opt if use_fast_impl else COCOeval)(coco_gt, coco_dt, iou_type)\n"),
]


class PatchError(SystemExit):
    pass


def apply(package: Path) -> list[str]:
    """Patch the ``detectron2`` package folder in place; returns what was changed, one line per file."""
    package = Path(package)
    done = []
    for rel, old, new in TEXT_PATCHES:
        f = package / rel
        text = f.read_text()
        if text.count(old) != 1:
            raise PatchError(f"ring-install-detectron2: {f} does not contain the text this installer patches "
                             "exactly once; it is not Detectron2 v0.6's source (set RINGNCE_DETECTRON2_SOURCE for "
                             "another release).")
        f.write_text(text.replace(old, new))
        done.append(f"{rel}: COCOEvaluator falls back to pycocotools' COCOeval without the C++ extension")
    for f in sorted(package.rglob("*.py")):
        text = f.read_text()
        fixed = NUMPY_ALIASES.sub(lambda m: m.group(1), text).replace("Image.LINEAR", "Image.BILINEAR")
        if fixed != text:
            f.write_text(fixed)
            done.append(f"{f.relative_to(package)}: NumPy aliases / Image.LINEAR replaced")
    if (package / "_C.py").exists() or any(package.glob("_C*.so")):
        raise PatchError(f"ring-install-detectron2: {package} already has a _C module; refusing to shadow it.")
    (package / "_C.py").write_text(EXTENSION_STUB)
    done.append("_C.py: stand-in for the C++ extension")
    return done
