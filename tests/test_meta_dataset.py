import json
import math

import numpy as np
import pytest
import torch

from meta_dataset.cli import main as md_main
from meta_dataset.classifiers import CLASSIFIER_REGISTRY, mean_ci95
from meta_dataset.convert import write_source
from meta_dataset.episodes import EpisodeError, EpisodeSampler
from meta_dataset.sources import Source
from meta_dataset.spec import SpecError, load_spec, official_spec
from meta_dataset.tfrecord import RecordError, RecordFile, decode_example, encode_example, masked_crc, write_records


def _check_episode(spec, split, ep, protocol):
    classes = set(spec.classes(split))
    ways = len(ep.classes)
    assert len(set(ep.classes.tolist())) == ways and set(ep.classes.tolist()) <= classes
    support = {tuple(r) for r in ep.support.tolist()}
    query = {tuple(r) for r in ep.query.tolist()}
    assert len(support) == len(ep.support) and len(query) == len(ep.query)  # no image twice
    assert not support & query
    for c, j in ep.support.tolist() + ep.query.tolist():
        assert 0 <= j < spec.images_per_class[c] and c in set(ep.classes.tolist())
    q_per = np.bincount(ep.query_labels, minlength=ways)
    s_per = np.bincount(ep.support_labels, minlength=ways)
    sizes = np.array([spec.images_per_class[c] for c in ep.classes])
    if protocol == "variable":
        assert 5 <= ways <= 50
        q = min(10, sizes.min() // 2)
        assert (q_per == q).all()
        assert (s_per >= 1).all() and (s_per <= sizes - q).all() and s_per.sum() <= 500
    else:
        shots = 1 if protocol == "5w1s" else 5
        assert ways == 5 and (q_per == 15).all() and (s_per == shots).all()
    for j, c in enumerate(ep.classes):  # labels index the episode's classes
        assert all(ep.support[ep.support_labels == j][:, 0] == c)


# quickdraw (~1 min: its classes hold ~100k images each) under -m slow; the other nine sources run by default
@pytest.mark.parametrize("name", ["aircraft", "cu_birds", "dtd", "fungi", "mscoco",
                                  pytest.param("quickdraw", marks=pytest.mark.slow), "traffic_sign",
                                  "vgg_flower", "omniglot", "ilsvrc_2012"])
def test_variable_episodes_obey_the_rules_on_official_specs(name):
    spec = official_spec(name)
    sampler = EpisodeSampler(spec, "test", "variable", seed=1)
    n = 300 if name == "ilsvrc_2012" else 1000
    ways = []
    for i in range(n):
        ep = sampler.episode(i)
        _check_episode(spec, "test", ep, "variable")
        ways.append(len(ep.classes))
        if spec.kind == "bilevel":  # one alphabet per episode
            alphabets = [next(k for k, (_, cs) in enumerate(spec.superclasses["test"]) if c in cs) for c in ep.classes]
            assert len(set(alphabets)) == 1
        if spec.kind == "hierarchical":  # the leaves of one eligible node
            h = spec.hierarchy["test"]
            assert any(set(ep.classes.tolist()) <= set(h.spans[nd]) and 5 <= len(h.spans[nd]) <= 392
                       and len(ep.classes) == min(50, len(h.spans[nd])) for nd in h.internal_nodes())
    if name == "ilsvrc_2012":
        assert min(ways) >= 6  # ILSVRC test has 15 eligible nodes, the smallest spans 6 leaves
    if spec.kind == "flat" and len(spec.classes("test")) >= 50:
        # uniform over [5, 50], both ends included (1000 draws miss an end with probability ~2e-10 each)
        assert max(ways) == 50 and min(ways) == 5 and abs(np.mean(ways) - 27.5) < 1.5


@pytest.mark.parametrize("protocol", ["5w1s", "5w5s"])
def test_fixed_protocols(protocol):
    spec = official_spec("aircraft")
    sampler = EpisodeSampler(spec, "test", protocol, seed=2)
    for i in range(500):
        _check_episode(spec, "test", sampler.episode(i), protocol)


def test_same_seed_same_episodes_and_order_independence():
    spec = official_spec("omniglot")
    a, b = EpisodeSampler(spec, "test", seed=5), EpisodeSampler(spec, "test", seed=5)
    first = {i: a.episode(i) for i in (599, 0, 17, 3)}
    second = {i: b.episode(i) for i in (3, 17, 0, 599)}  # the other order: episode i depends on (seed, i) only
    for i, ea in first.items():
        eb = second[i]
        assert np.array_equal(ea.classes, eb.classes)
        assert np.array_equal(ea.support, eb.support) and np.array_equal(ea.query, eb.query)
    assert not np.array_equal(first[0].support, first[17].support)  # and episodes differ from each other
    assert not np.array_equal(a.episode(1).classes, EpisodeSampler(spec, "test", seed=6).episode(1).classes)


def test_episode_errors():
    spec = official_spec("traffic_sign")
    with pytest.raises(EpisodeError, match="no classes in split 'train'"):
        EpisodeSampler(spec, "train")
    spec.images_per_class[spec.classes("test")[0]] = 1
    with pytest.raises(EpisodeError, match="fewer than 2 images"):
        s = EpisodeSampler(spec, "test", seed=0)
        for i in range(200):
            s.episode(i)
    # fixed shots: a class below shots + queries is left out (counted), never an aborted evaluation
    small = EpisodeSampler(spec, "test", "5w1s", seed=0)
    assert small.dropped >= 1 and spec.classes("test")[0] not in small.pool
    for name in list(spec.images_per_class)[:-4]:
        spec.images_per_class[name] = 3
    with pytest.raises(EpisodeError, match=r"has 4 classes with at least 16 images \(\d+ smaller left out\), fewer "
                                           r"than the 5 ways 5w1s needs"):
        EpisodeSampler(spec, "test", "5w1s", seed=0)


@pytest.mark.parametrize("protocol", ["5w1s", "5w5s"])
def test_fixed_shots_on_fungi_leave_small_classes_out_as_the_official_sampler(protocol):
    """Fungi's test split has classes of a few images: 123 of 200 5w1s episodes used to abort the whole run."""
    spec = official_spec("fungi")
    need = 16 if protocol == "5w1s" else 20
    small = {c for c in spec.classes("test") if spec.images_per_class[c] < need}
    sampler = EpisodeSampler(spec, "test", protocol, seed=0)
    assert sampler.dropped == len(small) > 0
    for i in range(200):
        ep = sampler.episode(i)
        _check_episode(spec, "test", ep, protocol)
        assert not set(ep.classes.tolist()) & small


def test_images_are_decoded_as_meta_dataset_does_whole_and_square():
    """A 40 x 20 image with a bright column at its left edge: resized whole to 84 x 84 (no centre crop, which
    would cut the column off), bilinear."""
    from PIL import Image

    from meta_dataset.features import decoder_transform
    from pretrain.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    a = np.zeros((20, 40, 3), dtype=np.uint8)
    a[:, :4] = 255
    x = decoder_transform(84)(Image.fromarray(a))
    assert x.shape == (3, 84, 84)
    pixels = x * torch.tensor(IMAGENET_STD)[:, None, None] + torch.tensor(IMAGENET_MEAN)[:, None, None]
    assert pixels[:, :, :6].min() > 0.95 and pixels[:, :, 12:].max() < 0.05  # the column, scaled by 84/40
    ref = torch.from_numpy(np.asarray(Image.fromarray(a).resize((84, 84), Image.BILINEAR))).permute(2, 0, 1) / 255
    assert (pixels - ref).abs().max() < 0.02


def test_tfrecord_framing_round_trip_and_index(tmp_path):
    payloads = [encode_example(bytes([i]) * (i * 7 + 1), i) for i in range(20)]
    path = tmp_path / "3.tfrecords"
    write_records(path, payloads)
    raw = path.read_bytes()
    assert int.from_bytes(raw[:8], "little") == len(payloads[0])
    assert int.from_bytes(raw[8:12], "little") == masked_crc(raw[:8])
    rf = RecordFile(path)
    assert len(rf) == 20 and (tmp_path / "3.tfrecords.index.json").exists()
    assert decode_example(rf.read(13)) == (bytes([13]) * 92, 13)
    assert RecordFile(path).index.tolist() == rf.index.tolist()  # reused


def test_records_agree_with_the_tfrecord_package(tmp_path):
    """Cross-check with an independent implementation: ours -> its reader, its writer -> ours (CRCs verified)."""
    from tfrecord.reader import tfrecord_loader
    from tfrecord.writer import TFRecordWriter

    images = [bytes([i, 255 - i]) * (i * 5 + 1) for i in range(12)]
    ours = tmp_path / "ours.tfrecords"
    write_records(ours, [encode_example(im, 40 + i) for i, im in enumerate(images)])
    read = list(tfrecord_loader(str(ours), None, {"image": "byte", "label": "int"}))
    assert [bytes(r["image"]) for r in read] == images and [int(r["label"][0]) for r in read] == list(range(40, 52))

    theirs = tmp_path / "theirs.tfrecords"
    w = TFRecordWriter(str(theirs))
    for i, im in enumerate(images):
        w.write({"image": (im, "byte"), "label": (7 * i, "int")})
    w.close()
    rf = RecordFile(theirs)  # verifies every length CRC while indexing, and each data CRC on read
    assert len(rf) == 12
    assert [decode_example(rf.read(i)) for i in range(12)] == [(im, 7 * i) for i, im in enumerate(images)]
    for payload in (b"", b"abc", bytes(range(256))):
        assert masked_crc(payload).to_bytes(4, "little") == TFRecordWriter.masked_crc(payload)


def test_corrupted_and_truncated_records(tmp_path):
    path = tmp_path / "0.tfrecords"
    write_records(path, [encode_example(b"x" * 100, 0), encode_example(b"y" * 100, 0)])
    data = bytearray(path.read_bytes())
    data[40] ^= 0xFF  # a byte inside the first record's data
    path.write_bytes(bytes(data))
    rf = RecordFile(path)
    with pytest.raises(RecordError, match=r"0.tfrecords: record 0 .* corrupted \(data CRC mismatch\)"):
        rf.read(0)
    path.write_bytes(bytes(data[:-30]))
    with pytest.raises(RecordError, match="truncated"):
        RecordFile(path)


def _converted(tmp_path, n_classes=6, per_class=12):
    rng = np.random.default_rng(0)
    images = {c: [rng.integers(0, 256, (20, 20, 3), dtype=np.uint8) for _ in range(per_class)]
              for c in range(n_classes)}
    write_source(tmp_path, "toy", images, {c: f"class{c}" for c in range(n_classes)}, (0, 1, n_classes - 1))
    return images


def test_converter_round_trips_through_the_reader(tmp_path):
    images = _converted(tmp_path)
    spec = load_spec(tmp_path / "toy")
    assert spec.classes("test") == [1, 2, 3, 4, 5] and spec.classes("valid") == [0]
    raw = json.loads((tmp_path / "toy" / "dataset_spec.json").read_text())
    assert raw["__class__"] == "DatasetSpecification" and raw["classes_per_split"] == {"TRAIN": 0, "VALID": 1,
                                                                                        "TEST": 5}
    src = Source(tmp_path, "toy")
    assert src.mode == "records"
    got = src.class_images(3)
    assert len(got) == 12 and np.array_equal(np.asarray(got[4]), images[3][4])


def test_image_folders_and_missing_paths(tmp_path):
    from PIL import Image

    for c in ("cat", "dog"):
        (tmp_path / "pets" / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((8, 8, 3), i * 40, np.uint8)).save(tmp_path / "pets" / c / f"{i}.png")
    src = Source(tmp_path, "pets")
    assert src.mode == "folders" and src.spec.class_names == {0: "cat", 1: "dog"}
    assert src.spec.images_per_class == {0: 3, 1: 3} and np.asarray(src.class_images(1)[2])[0, 0, 0] == 80
    with pytest.raises(SpecError, match="missing_source.*does not exist"):
        Source(tmp_path, "missing_source")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "0.tfrecords").write_bytes(b"")
    with pytest.raises(SpecError, match="bad/dataset_spec.json not found"):
        Source(tmp_path, "bad")


def test_classifiers_and_ci():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(5, 16, generator=g) * 4
    s_lab = torch.arange(5).repeat_interleave(3)
    q_lab = torch.arange(5).repeat_interleave(10)
    support = centers[s_lab] + torch.randn(15, 16, generator=g)
    query = centers[q_lab] + torch.randn(50, 16, generator=g)
    for name, clf in CLASSIFIER_REGISTRY:
        acc = (clf(support, s_lab, query, 5) == q_lab).float().mean().item()
        assert acc > 0.9, name
    mean, ci = mean_ci95([50.0, 60.0, 70.0, 80.0])
    assert mean == 65.0 and ci == pytest.approx(1.96 * np.std([50, 60, 70, 80], ddof=1) / 2)


def test_cli_end_to_end_with_cached_features(tmp_path, capsys):
    _converted(tmp_path / "records", n_classes=6, per_class=12)
    out = tmp_path / "out"
    args = ["--backbone", "resnet18", "--records", str(tmp_path / "records"), "--sources", "toy", "--episodes", "20",
            "--image-size", "16", "--quiet", "-o", str(out)]
    assert md_main(args) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["stage"] == "meta_dataset" and 0 <= s["metrics"]["toy/accuracy"] <= 100
    assert math.isfinite(s["metrics"]["toy/ci95"]) and s["sources"][0]["classes"] == 5
    cached = list((tmp_path / "records" / ".feature_cache").glob("toy-test-*-16px-resize.pt"))
    assert len(cached) == 1
    # the reported mean and CI are those of the episodes drawn by seed 0 on the cached features
    from meta_dataset.cli import run_episodes

    source = Source(tmp_path / "records", "toy", tmp_path / "records" / ".feature_cache")
    accs = run_episodes(torch.load(cached[0], weights_only=True), EpisodeSampler(source.spec, "test", "variable", 0),
                        20, "ncc-cosine")
    assert (s["metrics"]["toy/accuracy"], s["metrics"]["toy/ci95"]) == pytest.approx(mean_ci95(accs))
    assert md_main(args[:-2] + ["--protocol", "linear_halves"]) == 0
    assert "| toy" in capsys.readouterr().out
    assert md_main(["--backbone", "resnet18", "--records", str(tmp_path), "--sources", "nope", "--quiet"]) == 2
    assert md_main(["--records", str(tmp_path), "--sources", "toy"]) == 2  # neither a checkpoint nor --backbone
    assert "give either a checkpoint" in capsys.readouterr().err


def test_a_shadowing_meta_dataset_package_is_one_sentence(tmp_path):
    """Google's meta_dataset shares the package name: the commands name the clash instead of a traceback."""
    fake = tmp_path / "shadow" / "meta_dataset"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from transfer.entry_points import meta_dataset_main; "
            "sys.exit(meta_dataset_main(['--help']))")
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "shadow")], capture_output=True, text=True,
                       cwd=str(tmp_path))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "is not ringnce's (Google's meta_dataset has the same name)" in r.stderr and str(fake) in r.stderr


def test_ncc_cosine_normalises_the_prototypes_where_the_dot_product_would_disagree():
    from meta_dataset.classifiers import CLASSIFIER_REGISTRY

    # class 0: a long prototype at 45 degrees from the query; class 1: a short one at 10 degrees
    support = torch.tensor([[10.0, 10.0], [1.0, 0.176]])
    query = torch.tensor([[1.0, 0.0]])
    assert (query @ support.t()).argmax(1).item() == 0  # unnormalised prototypes pick class 0
    assert CLASSIFIER_REGISTRY.get("ncc-cosine")(support, torch.tensor([0, 1]), query, 2).item() == 1
