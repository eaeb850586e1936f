"""The shared house pieces: the registry type, the error reporting of every command, file lookup, schemas."""
import pytest

from pretrain.common import Registry, UserError, check_keys, cli_main, find_file


def test_registry_registers_by_name_and_names_the_key_on_a_miss():
    reg = Registry("TOY", key="TOY.NAME", doc="Toys: fn() -> int.")
    reg.register(lambda: 1, name="one")

    @reg.register(name="two")
    def two():
        return 2

    @reg.register()
    def three():
        return 3
    assert reg.get("one")() == 1 and reg.get("two")() == 2 and reg.get("three")() == 3
    assert reg.names() == ["one", "three", "two"] and "two" in reg and reg.__doc__ == "Toys: fn() -> int."
    with pytest.raises(UserError, match="TOY.NAME 'four' is unknown; choose one of: one, three, two."):
        reg.get("four")
    with pytest.raises(AssertionError, match="already registered"):
        reg.register(lambda: 5, name="one")


def test_every_registry_states_its_contract():
    from meta_dataset.classifiers import CLASSIFIER_REGISTRY
    from meta_dataset.convert import CONVERTER_REGISTRY
    from pretrain.contrastive import ESTIMATOR_REGISTRY, RING_SCHEDULE_REGISTRY, SAMPLER_REGISTRY
    from pretrain.contrastive.objectives import OBJECTIVE_REGISTRY
    from pretrain.data import DATASET_REGISTRY
    from pretrain.data.transforms import AUGMENTATION_REGISTRY
    from pretrain.engine.lr_schedules import LR_SCHEDULE_REGISTRY

    regs = [OBJECTIVE_REGISTRY, SAMPLER_REGISTRY, ESTIMATOR_REGISTRY, RING_SCHEDULE_REGISTRY, DATASET_REGISTRY,
            AUGMENTATION_REGISTRY, LR_SCHEDULE_REGISTRY, CLASSIFIER_REGISTRY, CONVERTER_REGISTRY]
    for reg in regs:
        assert isinstance(reg, Registry) and len(reg.__doc__) > 100 and reg.names(), reg
    # found without an import list: every module of the package registers itself
    import pkgutil

    import pretrain.contrastive.estimators as E
    import pretrain.contrastive.objectives as O

    # (other tests register toys of their own in this process: hence <=)
    assert {m.name for m in pkgutil.iter_modules(O.__path__)} - {"base"} <= set(OBJECTIVE_REGISTRY.names())
    assert {m.name for m in pkgutil.iter_modules(E.__path__)} - {"base"} <= set(ESTIMATOR_REGISTRY.names())


def test_declared_settings_merge_and_a_conflict_names_both():
    from pretrain.common import merge_declared
    from pretrain.config import declared_defaults, get_defaults

    assert merge_declared([("a", {"S": {"X": 1}}), ("b", {"S": {"X": 1, "Y": 2}})]) == {"S": {"X": 1, "Y": 2}}
    with pytest.raises(ValueError, match="b declares S.X = 3 but a declared 1"):
        merge_declared([("a", {"S": {"X": 1}}), ("b", {"S": {"X": 3}})])
    cfg = get_defaults()
    for section, keys in declared_defaults().items():  # every declared setting is a default
        for k, v in keys.items():
            assert cfg[section][k] == v


def test_cli_main_reports_user_errors_in_one_line_and_keeps_bugs_tracebacks(capsys):
    @cli_main("ring-toy")
    def main(kind):
        if kind == "user":
            raise UserError("toy.yaml: unknown key 'X'; remove it.")
        if kind == "bug":
            raise ValueError("an internal bug")
        return None

    assert main("ok") == 0
    assert main("user") == 2
    assert capsys.readouterr().err == "ring-toy: error: toy.yaml: unknown key 'X'; remove it.\n"
    with pytest.raises(ValueError, match="an internal bug"):
        main("bug")


def test_find_file_takes_a_path_or_a_shipped_name(tmp_path):
    shipped = tmp_path / "shipped"
    (shipped / "sub").mkdir(parents=True)
    (shipped / "a.yaml").write_text("x: 1")
    (shipped / "sub" / "b.yaml").write_text("x: 2")
    mine = tmp_path / "mine.yaml"
    mine.write_text("x: 3")
    assert find_file(mine, shipped, "config") == mine
    assert find_file("a", shipped, "config") == shipped / "a.yaml"
    assert find_file("sub/b.yaml", shipped, "config") == shipped / "sub" / "b.yaml"
    with pytest.raises(UserError, match="config 'c' does not exist; give a path or one of: a."):
        find_file("c", shipped, "config")


def test_check_keys_names_the_unknown_key_and_the_valid_ones():
    ref = {"a": 1, "b": {"c": [1], "d": 2}}
    check_keys({"a": 3, "b": {"c": [2, 3]}}, ref, "f.yaml")
    with pytest.raises(UserError, match=r"f.yaml: unknown key 'b.e'; valid keys here are: b.c, b.d."):
        check_keys({"b": {"e": 1}}, ref, "f.yaml")
    with pytest.raises(UserError, match="'b.c' must be a list"):
        check_keys({"b": {"c": 5}}, ref, "f.yaml")
    with pytest.raises(UserError, match="'b' must be a section"):
        check_keys({"b": 5}, ref, "f.yaml")
