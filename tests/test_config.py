import pytest

from pretrain.config import CONFIG_DIR, ConfigError, load_config


def test_defaults_are_the_papers():
    cfg = load_config("paper_base")
    assert (cfg.SOLVER.LR, cfg.SOLVER.BATCH_SIZE, cfg.SOLVER.EPOCHS, cfg.OBJECTIVE.TEMPERATURE) == (0.03, 256, 200, 0.07)
    assert cfg.SOLVER.STEPS == (0.68, 0.83) and cfg.SEED == 1337 and cfg.LINCLS.LR == 0.01


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.rglob("*.yaml")), ids=lambda p: str(p.relative_to(CONFIG_DIR)))
def test_every_shipped_config_loads(path):
    load_config(path)


def test_base_inheritance_and_overrides():
    cfg = load_config("cifar10/moco_ring_anneal", ["SOLVER.EPOCHS", "3", "RING.OUTER", "0.2"])
    assert cfg.DATA.NAME == "cifar10" and cfg.SOLVER.LR == 0.03 and cfg.SOLVER.EPOCHS == 3 and cfg.RING.OUTER == 0.2
    assert cfg.OBJECTIVE.ESTIMATOR == "ring" and cfg.RING.SCHEDULE == "linear" and cfg.RING.ANNEAL_EPOCHS == 100
    assert cfg.MOCO.QUEUE_SIZE == 4096 and load_config("imagenet/moco_nce").MOCO.QUEUE_SIZE == 65536
    paper = load_config("stl10_paper224/moco_ring")
    assert (paper.DATA.IMAGE_SIZE, paper.MODEL.SMALL_STEM, paper.DATA.TRAIN_SPLIT) == (224, False, "train")
    assert paper.LINCLS.PROTOCOL == "paper" and load_config("cifar10/ir_nce").DATA.IMAGE_SIZE == 32


def test_paper_names_compose_dataset_objective_and_anneal(tmp_path):
    """``<dataset>/<objective>_<estimator>[_anneal]`` is data/<dataset> + objective/<objective> (+ anneal) with the
    estimator set, for every shipped dataset, objective and registered estimator; -c files compose in order."""
    from pretrain.contrastive.estimators import estimator_names

    datasets = sorted(p.stem for p in (CONFIG_DIR / "data").glob("*.yaml"))
    objectives = sorted(p.stem for p in (CONFIG_DIR / "objective").glob("*.yaml"))
    assert len(datasets) == 7 and objectives == ["cmc", "ir", "moco", "simclr"]
    for ds in datasets:
        for obj in objectives:
            for est in estimator_names():
                a = load_config(f"{ds}/{obj}_{est}_anneal")
                b = load_config([f"data/{ds}", f"objective/{obj}", "anneal"], ["OBJECTIVE.ESTIMATOR", est])
                assert a == b and a.OBJECTIVE.NAME == obj and a.RING.SCHEDULE == "linear"
    # a file of one's own composes with the shipped pieces, and its _BASE_ may name one
    mine = tmp_path / "mine.yaml"
    mine.write_text("_BASE_: data/stl10\nSOLVER:\n  EPOCHS: 7\n")
    cfg = load_config([mine, "objective/cmc"])
    assert (cfg.DATA.NAME, cfg.SOLVER.EPOCHS, cfg.OBJECTIVE.NAME, cfg.CMC.WIDTH) == ("stl10", 7, "cmc", 32)
    with pytest.raises(ConfigError, match="no estimator 'rign' is registered; choose one of: ball, "):
        load_config("cifar10/moco_rign")
    with pytest.raises(ConfigError, match="_BASE_ 'data/nope' does not exist"):
        (tmp_path / "bad.yaml").write_text("_BASE_: data/nope\n")
        load_config(tmp_path / "bad.yaml")


def test_unknown_key_in_file_lists_valid_keys(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("SOLVER:\n  LR: 0.1\n  EPOHCS: 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert str(p) in msg and "SOLVER.EPOHCS" in msg and "SOLVER.EPOCHS" in msg and "\n" not in msg


def test_unknown_override_and_odd_pairs():
    with pytest.raises(ConfigError, match="unknown config key 'MOCO.QUEUE'.*MOCO.QUEUE_SIZE"):
        load_config(None, ["MOCO.QUEUE", "5"])
    with pytest.raises(ConfigError, match="KEY VALUE pairs"):
        load_config(None, ["SOLVER.LR"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("no_such_config")


def test_a_type_mismatch_names_the_key_and_the_type_in_plain_words(tmp_path):
    with pytest.raises(ConfigError, match=r"^command line: SOLVER.EPOCHS must be an integer \(its default is 200\), "
                                          r"got 'many'\.$"):
        load_config(None, ["SOLVER.EPOCHS", "many"])
    with pytest.raises(ConfigError, match="LOG.PROGRESS must be True or False"):
        load_config(None, ["LOG.PROGRESS", "3"])
    (tmp_path / "my.yaml").write_text("SOLVER:\n  LR: fast\n")
    with pytest.raises(ConfigError, match=r"my.yaml: SOLVER.LR must be a number \(its default is 0.03\), got 'fast'"):
        load_config(str(tmp_path / "my.yaml"))
    assert load_config(None, ["SOLVER.LR", "1"]).SOLVER.LR == 1.0  # an integer where a float is due is fine


@pytest.mark.parametrize("key,value,bound", [("SOLVER.BATCH_SIZE", "-8", ">= 1"), ("SOLVER.BATCH_SIZE", "0", ">= 1"),
                                             ("SOLVER.EPOCHS", "-3", ">= 1"), ("SOLVER.LR", "-1", "> 0"),
                                             ("LINCLS.EPOCHS", "-1", ">= 1"), ("OBJECTIVE.TEMPERATURE", "0", "> 0")])
def test_values_no_run_can_use_stop_before_any_work(key, value, bound):
    with pytest.raises(ConfigError, match=f"{key} must be {bound}, got {value}"):
        load_config(None, [key, value])


def test_an_unknown_key_suggests_the_closest():
    with pytest.raises(ConfigError, match=r"'SOLVER.MAX_ITER' \(did you mean SOLVER.MAX_ITERS\?\)"):
        load_config(None, ["SOLVER.MAX_ITER", "5"])
