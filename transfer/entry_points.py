"""Entry points of the Meta-Dataset commands, kept outside the ``meta_dataset`` package.

Google's Meta-Dataset code installs a top-level package named ``meta_dataset`` as well.  When it comes
first on ``sys.path``, ``import meta_dataset.cli`` would fail deep inside an import; these wrappers check
which package Python found and say so in one sentence.
"""
from __future__ import annotations

import sys


def _ours() -> bool:
    try:
        import meta_dataset
    except ImportError:
        return False
    return getattr(meta_dataset, "RINGNCE", False) is True


def _refuse(prog: str) -> int:
    import meta_dataset

    where = getattr(meta_dataset, "__file__", None) or list(getattr(meta_dataset, "__path__", []))
    print(f"{prog}: error: the 'meta_dataset' package Python imports ({where}) is not ringnce's (Google's "
          "meta_dataset has the same name); uninstall it or run from a separate virtual environment.",
          file=sys.stderr)
    return 2


def meta_dataset_main(argv: list[str] | None = None) -> int:
    if not _ours():
        return _refuse("ring-meta-dataset")
    from meta_dataset.cli import main

    return main(argv)


def md_convert_main(argv: list[str] | None = None) -> int:
    if not _ours():
        return _refuse("ring-md-convert")
    from meta_dataset.convert import main

    return main(argv)
