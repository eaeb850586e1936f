"""ring-install-detectron2: install Detectron2 into the current environment (idempotent).

- ``RINGNCE_DETECTRON2_SOURCE`` set (a git URL, or a local checkout of facebookresearch/detectron2):
  upstream Detectron2 is built from that source with its C++/CUDA extension: the full install.
- Otherwise: the Python sources of Detectron2 v0.6 from PyPI's sdist ``pb1-detectron2==0.6`` (fetched
  by pip, pinned by sha256) are installed without the C++ extension, which that sdist does not ship,
  patched first (``transfer/detectron2_patches.py``: NumPy/Pillow names removed since v0.6, a stand-in
  ``detectron2._C``, COCOEvaluator's fallback to pycocotools) so that any script using Detectron2 works.
  ``RINGNCE_DETECTRON2_SDIST`` may name a local copy of that tarball (offline mirrors); its sha256 is
  checked all the same.
"""
from __future__ import annotations

import hashlib
import importlib.metadata as md
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from pretrain.common import cli_main, command_parser
from transfer import detectron2_patches

SDIST_REQ = "pb1-detectron2==0.6"
SDIST_SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"
PYONLY_VERSION = "0.6+ringnce.pyonly.2"  # bumped whenever the patches change: make setup reinstalls
OURS = "0.6+ringnce."
ENV_SOURCE = "RINGNCE_DETECTRON2_SOURCE"
ENV_SDIST = "RINGNCE_DETECTRON2_SDIST"
LACKS = ("deformable convolution (DCN), rotated boxes / ROIAlignRotated / rotated NMS, and the fast C++ COCO "
         "evaluator (COCOEvaluator falls back to pycocotools' COCOeval); Mask/Keypoint R-CNN, FPN and C4 models use "
         "torchvision's roi_align/nms and train on CPU and GPU")

_SETUP_PY = f'''from setuptools import find_packages, setup
setup(name="detectron2", version="{PYONLY_VERSION}", python_requires=">=3.7",
      packages=find_packages(include=["detectron2", "detectron2.*"]), ext_modules=[])
'''


def installed_version() -> str | None:
    try:
        return md.version("detectron2")
    except md.PackageNotFoundError:
        return None


def _pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_sdist(dest: Path) -> Path:
    local = os.environ.get(ENV_SDIST)
    if local:
        path = Path(local)
        if not path.is_file():
            raise SystemExit(f"ring-install-detectron2: {ENV_SDIST}={local} does not exist; point it at "
                             "pb1-detectron2-0.6.tar.gz or unset it.")
    else:
        req = dest / "requirements.txt"
        req.write_text(f"{SDIST_REQ} --hash=sha256:{SDIST_SHA256}\n")
        # --no-build-isolation: the sdist's setup.py imports torch just to describe itself.
        _pip("download", "--no-deps", "--no-binary", ":all:", "--no-build-isolation", "--require-hashes",
             "-r", str(req), "-d", str(dest))
        path = next(dest.glob("pb1*detectron2-0.6.tar.gz"))
    digest = _sha256(path)
    if digest != SDIST_SHA256:
        raise SystemExit(f"ring-install-detectron2: {path} has sha256 {digest}, expected {SDIST_SHA256}; "
                         "refusing to install it.")
    return path


def install_python_only(force: bool = False) -> None:
    with tempfile.TemporaryDirectory(prefix="ringnce-d2-") as tmp:
        tmp = Path(tmp)
        sdist = fetch_sdist(tmp)
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp / "src", filter="data")
        root = next((tmp / "src").iterdir())
        for line in detectron2_patches.apply(root / "detectron2"):
            print(f"[detectron2] patched {line}")
        for name in ("setup.py", "setup.cfg", "pyproject.toml"):
            (root / name).unlink(missing_ok=True)
        (root / "setup.py").write_text(_SETUP_PY)
        _pip("install", "--no-deps", "--no-build-isolation", *(["--force-reinstall"] if force else []), str(root))


def install_from_source(source: str) -> None:
    spec = source if Path(source).exists() else (source if source.startswith("git+") else f"git+{source}")
    _pip("install", "--no-build-isolation", spec)


@cli_main("ring-install-detectron2")
def main(argv: list[str] | None = None) -> int:
    p = command_parser("ring-install-detectron2", __doc__)
    p.add_argument("--force", action="store_true", help="reinstall even if the same build is present")
    args = p.parse_args(argv)
    source = os.environ.get(ENV_SOURCE)
    have = installed_version()
    if source:
        if have and have != PYONLY_VERSION and not args.force:
            print(f"[detectron2] upstream Detectron2 {have} already installed (from source); nothing to do.")
            return 0
        install_from_source(source)
        print(f"[detectron2] installed upstream Detectron2 {installed_version()} from {source} "
              "(full build, C++/CUDA ops included).")
        return 0
    if have == PYONLY_VERSION and not args.force:
        print(f"[detectron2] Detectron2 {have} already installed (Python sources of {SDIST_REQ}); nothing to do.")
    elif have and not have.startswith(OURS) and not args.force:
        print(f"[detectron2] Detectron2 {have} is installed (not ours); keeping it. Use --force to replace it.")
        return 0
    else:  # not installed, an earlier build of ours (other patches), or --force
        install_python_only(force=bool(args.force or have))
        print(f"[detectron2] installed Detectron2 {PYONLY_VERSION}: the Python sources of {SDIST_REQ} "
              f"(sha256 {SDIST_SHA256[:12]}...) without the C++ extension.")
    print(f"[detectron2] this build lacks: {LACKS}. For the full build set {ENV_SOURCE} to a Detectron2 git URL "
          "or checkout and run this again with --force.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
