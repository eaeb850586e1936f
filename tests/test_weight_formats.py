"""load_backbone on weights in every layout other projects write: the features equal the source model's."""
import pytest
import torch
import torchvision

from pretrain.evaluation.pretrained import load_backbone
from pretrain.modeling.weight_formats import (WeightsError, detectron2_to_torchvision, find_backbone,
                                              torchvision_to_detectron2)
from transfer.formats import WEIGHT_LAYOUTS, write_weights


def _source(ctor=torchvision.models.resnet18, seed=0):
    """A torchvision ResNet with non-trivial BN statistics (so a dropped or swapped buffer shows)."""
    torch.manual_seed(seed)
    net = ctor(weights=None).eval()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
            m.bias.data.normal_(0, 0.1)
    return net


def _features(net, x):
    """torchvision's forward up to the pooled features (what our ResNetTrunk returns)."""
    net.fc = torch.nn.Identity()
    with torch.no_grad():
        return net(x)


@pytest.mark.parametrize("layout", WEIGHT_LAYOUTS)
def test_every_layout_loads_to_the_same_features(tmp_path, layout):
    net = _source()
    suffix = {"safetensors": ".safetensors", "moco": ".pth.tar", "lightning": ".ckpt", "detectron2": ".pkl"}
    path = write_weights(net.state_dict(), tmp_path / f"w{suffix.get(layout, '.pth')}", layout)
    cfg, bb = load_backbone(path)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        got = bb.eval()(x)
    diff = (got - _features(net, x)).abs().max().item()
    assert diff < 1e-5, (layout, diff)
    assert cfg.MODEL.BACKBONE == "resnet18" and not cfg.MODEL.SMALL_STEM and cfg.WEIGHTS.SHA256
    assert cfg.WEIGHTS.NAME == path.name
    expected = {"moco": "MoCo", "lightning": "Lightning", "vissl": "VISSL", "dino": "DINO checkpoint (teacher",
                "detectron2": "Detectron2", "safetensors": "safetensors"}.get(layout, "torchvision/timm")
    assert expected in cfg.WEIGHTS.FORMAT


def test_timm_safetensors_and_resnet50(tmp_path):
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = timm.create_model("resnet50", pretrained=False).eval()
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    cfg, bb = load_backbone(path, name="timm-r50")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = net.forward_head(net.forward_features(x), pre_logits=True)
        assert (bb.eval()(x) - ref).abs().max().item() < 1e-4
    assert cfg.MODEL.BACKBONE == "resnet50" and cfg.WEIGHTS.NAME == "timm-r50"
    cfg2, _ = load_backbone(path, arch="timm:resnet50")  # --arch builds timm's own module; the same tensors fit
    assert cfg2.MODEL.BACKBONE == "timm:resnet50"


def test_random_init_of_a_file_is_its_architecture_untrained(tmp_path):
    path = write_weights(_source().state_dict(), tmp_path / "r18.pth", "torchvision")
    _, trained = load_backbone(path)
    _, a = load_backbone(path, random_init=True, opts=["SEED", "3"])
    _, b = load_backbone(path, random_init=True, opts=["SEED", "3"])
    w = "layer1.0.conv1.weight"
    assert torch.equal(a.state_dict()[w], b.state_dict()[w])
    assert not torch.equal(a.state_dict()[w], trained.state_dict()[w])


def test_missing_unexpected_and_misshapen_keys_are_one_sentence(tmp_path):
    sd = _source().state_dict()
    del sd["layer2.1.bn2.running_var"]
    with pytest.raises(WeightsError, match=r"a.pth, read as a PyTorch state dict .*: 1 missing \(layer2.1.bn2.running_var\)"):
        load_backbone(write_weights(sd, tmp_path / "a.pth", "torchvision"))
    sd = _source().state_dict()
    sd["layer1.0.extra.weight"] = torch.zeros(3)
    with pytest.raises(WeightsError, match=r"1 unexpected \(layer1.0.extra.weight\)"):
        load_backbone(write_weights(sd, tmp_path / "b.pth", "torchvision"))
    path = write_weights(_source().state_dict(), tmp_path / "c.pth", "torchvision")
    with pytest.raises(WeightsError, match=r"resnet34: 80 missing \(layer1.2"):
        load_backbone(path, arch="resnet34")  # the asked architecture has more blocks than the file
    sd = _source().state_dict()
    sd["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    with pytest.raises(WeightsError, match=r"another shape \(layer1.0.conv1.weight \(64, 64, 1, 1\) vs"):
        load_backbone(write_weights(sd, tmp_path / "d.pth", "torchvision"))


def test_two_networks_need_a_prefix_and_prefix_picks_one(tmp_path):
    a, b = _source(seed=0).state_dict(), _source(seed=1).state_dict()
    path = tmp_path / "two.pth"
    torch.save({**{f"l.{k}": v for k, v in a.items()}, **{f"ab.{k}": v for k, v in b.items()}}, path)
    with pytest.raises(WeightsError, match=r"several ResNets \('ab\.', 'l\.'\).*--prefix"):
        load_backbone(path)
    _, bb = load_backbone(path, prefix="ab")
    assert torch.equal(bb.state_dict()["conv1.weight"], b["conv1.weight"])
    with pytest.raises(WeightsError, match="no ResNet under --prefix 'x.'"):
        find_backbone(path, "x")


def test_not_a_resnet_and_unreadable_files(tmp_path):
    torch.save({"w": torch.zeros(3)}, tmp_path / "n.pth")
    with pytest.raises(WeightsError, match="holds no ResNet"):
        load_backbone(tmp_path / "n.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="could not be read"):
        load_backbone(tmp_path / "junk.pth")
    with pytest.raises(WeightsError, match="does not exist"):
        load_backbone(tmp_path / "absent.pth")


def test_pickle_with_code_is_refused(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("ran",))

    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"model": Evil()}))
    with pytest.raises(WeightsError, match="could not be read"):
        load_backbone(tmp_path / "evil.pkl")


def test_detectron2_names_round_trip():
    names = torchvision.models.resnet50().state_dict().keys()
    for n in names:
        if not n.startswith("fc."):
            assert detectron2_to_torchvision(torchvision_to_detectron2(n)) == n


# -- every evaluation command takes a weights file ---------------------------------------------------------------
def test_ring_lincls_and_knn_take_weights_files(tmp_path, capsys):
    import json

    from pretrain.knn import main as knn_main
    from pretrain.lincls import main as lincls_main
    from tests.conftest import TINY

    data = [k for k in TINY[:8]]  # the tiny synthetic data, nothing about the model (the file says that)
    pth = write_weights(_source().state_dict(), tmp_path / "r18.pth", "torchvision")
    tar = write_weights(_source().state_dict(), tmp_path / "r18.pth.tar", "moco")
    assert lincls_main(["--weights", str(tar), "--name", "mocov2", "-c", "cpu_small", "-o", str(tmp_path / "l"),
                        *data, "LINCLS.EPOCHS", "1", "SEED", "3"]) == 0
    assert "[ring-lincls] mocov2 resnet18 on synthetic" in capsys.readouterr().out
    s = json.loads((tmp_path / "l" / "summary.json").read_text())
    assert s["method"] == "external" and s["name"] == "mocov2" and s["seed"] == 3 and s["config"]["WEIGHTS.SHA256"]
    # the file as the positional argument works too (no "--resume" advice), and a Detectron2 .pkl
    assert lincls_main([str(pth), "-o", str(tmp_path / "l2"), *data, "LINCLS.EPOCHS", "1"]) == 0
    pkl = write_weights(_source().state_dict(), tmp_path / "r18.pkl", "detectron2")
    assert knn_main(["--weights", str(pkl), "-c", "cpu_small", "-o", str(tmp_path / "k"), *data, "KNN.K", "5"]) == 0
    assert "[ring-knn] r18.pkl resnet18 on synthetic (k=5)" in capsys.readouterr().out
    # a run brings its own architecture: --arch on one is one sentence
    assert lincls_main(["--weights", str(pth), "--arch", "resnet34"]) == 2
    assert "resnet34: 80 missing" in capsys.readouterr().err


def test_ring_meta_dataset_takes_a_weights_file(tmp_path, capsys):
    import json

    import numpy as np

    from meta_dataset.cli import main as md_main
    from meta_dataset.convert import write_source

    rng = np.random.default_rng(0)
    images = {c: [rng.integers(0, 256, (20, 20, 3), dtype=np.uint8) for _ in range(10)] for c in range(6)}
    write_source(tmp_path / "md", "toy", images, {c: f"c{c}" for c in range(6)}, (0, 1, 5))
    w = write_weights(_source().state_dict(), tmp_path / "dino.pth", "dino")
    assert md_main(["--weights", str(w), "--name", "dino-r18", "--records", str(tmp_path / "md"), "--sources", "toy",
                    "--episodes", "3", "--image-size", "32", "-o", str(tmp_path / "out"), "--quiet", "SEED", "2"]) == 0
    assert "dino-r18 resnet18 at 32 px" in capsys.readouterr().out
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["method"] == "external" and s["name"] == "dino-r18" and s["seed"] == 2
    assert s["weights"]["format"].startswith("DINO checkpoint (teacher")
