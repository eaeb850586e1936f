"""Built-in detection sets are found by their folder (transfer/detection/datasets/), not by a hand-kept list."""
import pkgutil
from pathlib import Path

import transfer.detection.datasets as package
from transfer.detection.builtin_sets import builtin_set, declared, suite_folders


def test_every_module_of_the_datasets_folder_declares_its_set_and_nothing_else_is_needed():
    sets = declared()
    modules = {m.name for m in pkgutil.iter_modules(package.__path__)}
    assert {"scenes", "trees"} <= modules and {"scenes_", "trees_"} <= set(sets)  # a new file adds to both
    # one set per module, declared by that very file (its writer lives there): no list names them
    assert sorted(s.ensure.__module__.rsplit(".", 1)[-1] for s in sets.values()) == sorted(modules)


def test_a_split_name_finds_its_set_and_the_suite_gets_one_folder_per_set(tmp_path: Path):
    assert builtin_set("trees_val").prefix == "trees_"
    assert builtin_set("scenes_instances_train").prefix == "scenes_"
    assert builtin_set("coco_2017_val") is None
    folders = suite_folders(tmp_path)
    assert (folders["RINGNCE_SCENES"], folders["RINGNCE_TREES"]) == (str(tmp_path / "scenes"), str(tmp_path / "trees"))
    assert len(folders) == len(declared())  # one folder under OUT per set
