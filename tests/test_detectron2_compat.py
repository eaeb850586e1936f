import subprocess
import sys

import pytest

from tests.conftest import ROOT
from transfer import install_detectron2 as inst


def test_installed_build_is_reported():
    version = inst.installed_version()
    assert version is not None, "make setup installs Detectron2"
    out = subprocess.run([sys.executable, "-m", "transfer.install_detectron2"], capture_output=True, text=True,
                         cwd=ROOT)
    assert out.returncode == 0
    if version == inst.PYONLY_VERSION:  # idempotent: the second run installs nothing
        assert "already installed" in out.stdout and "lacks" in out.stdout


def test_detectron2_imports_and_builds_a_model_on_cpu():
    from transfer.detectron2_compat import import_detectron2

    import_detectron2()
    import torch
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    cfg = get_cfg()
    cfg.MODEL.DEVICE, cfg.MODEL.MASK_ON = "cpu", True
    model = build_model(cfg).eval()
    with torch.no_grad():
        out = model([{"image": torch.rand(3, 64, 64) * 255}])
    assert "instances" in out[0]


def test_missing_extension_fails_clearly_only_when_used():
    from transfer.detectron2_compat import has_cpp_extension

    if has_cpp_extension():
        pytest.skip("a full Detectron2 build is installed")
    from detectron2 import _C
    from detectron2.layers import deform_conv  # noqa: F401 - imports fine without the extension

    with pytest.raises(_C.MissingExtensionError, match="deform_conv_forward is a C.. op.*RINGNCE_DETECTRON2_SOURCE"):
        _C.deform_conv_forward


def test_sdist_hash_is_checked(tmp_path, monkeypatch):
    fake = tmp_path / "pb1-detectron2-0.6.tar.gz"
    fake.write_bytes(b"not the release")
    monkeypatch.setenv(inst.ENV_SDIST, str(fake))
    with pytest.raises(SystemExit, match="expected 5d2e9e51"):
        inst.fetch_sdist(tmp_path)
    monkeypatch.setenv(inst.ENV_SDIST, str(tmp_path / "missing.tar.gz"))
    with pytest.raises(SystemExit, match="does not exist"):
        inst.fetch_sdist(tmp_path)


def test_installed_detectron2_imports_in_a_fresh_interpreter_without_our_modules():
    """The fixes are in the installed sources: nothing of ours runs first, NumPy and Pillow keep their own names."""
    code = ("import numpy as np, PIL.Image as I, detectron2.data, detectron2.evaluation, detectron2.engine; "
            "assert not hasattr(np, 'float') and not hasattr(I, 'LINEAR'); "
            "import sys; assert not [m for m in sys.modules if m.split('.')[0] in ('pretrain', 'transfer')]; "
            "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_patches_refuse_other_sources(tmp_path):
    from transfer import detectron2_patches

    (tmp_path / "evaluation").mkdir()
    (tmp_path / "evaluation" / "coco_evaluation.py").write_text("# another release\n")
    with pytest.raises(SystemExit, match="not Detectron2 v0.6's source"):
        detectron2_patches.apply(tmp_path)
    assert detectron2_patches.NUMPY_ALIASES.sub(lambda m: m.group(1), "np.float np.float32 np.bool_ np.int(x)") == \
        "float np.float32 np.bool_ int(x)"
