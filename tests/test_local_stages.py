"""ring-suite --jobs N: independent stages at once, each after what it reads, each with its share of the cores."""
import json
import subprocess
import sys
import time

import pytest

from pretrain.data.workers import available_cores
from transfer.local_stages import interrupt, run_concurrently
from transfer.suite import SuiteError, main as suite_main
from transfer.tasks.base import Stage

# a stage: announces it started, optionally waits for another stage's announcement, then writes its marker
STAGE = """
import json, os, pathlib, sys, time
me, wait_for, fail, linger = sys.argv[1], sys.argv[2], sys.argv[3] == "1", float(sys.argv[4])
d = pathlib.Path(os.environ["STAGE_DIR"])
(d / f"{me}.started").write_text("")
deadline = time.time() + 60
while wait_for and not (d / f"{wait_for}.started").exists():
    if time.time() > deadline:
        sys.exit(f"error: {wait_for} never ran beside {me}")
    time.sleep(0.05)
if fail:
    sys.exit("error: boom")
time.sleep(linger)
seen = sorted(p.stem for p in d.glob("*.json"))
(d / f"{me}.json").write_text(json.dumps({"threads": os.environ.get("OMP_NUM_THREADS"), "seen": seen}))
"""


def _stage(tmp_path, name, wait_for="", fail=False, after=(), linger=0.0):
    return Stage(name, [sys.executable, "-c", STAGE, name, wait_for, "1" if fail else "0", str(linger)],
                 tmp_path / f"{name}.json",
                 tmp_path / "logs" / f"{name}.log", env={"STAGE_DIR": str(tmp_path)},
                 after=tuple(tmp_path / f"{a}.json" for a in after))


def test_two_stages_run_side_by_side_and_a_dependent_waits_for_both(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    # a and b each wait until the other has started: they finish only when they run at the same time
    stages = [_stage(tmp_path, "a", wait_for="b"), _stage(tmp_path, "b", wait_for="a"),
              _stage(tmp_path, "c", after=("a", "b"))]
    done, running = [], []
    run_concurrently(stages, stages, 2, lambda now: running.append([s.name for s in now]),
                     lambda s, secs: done.append(s.name))
    assert sorted(done[:2]) == ["a", "b"] and done[2] == "c"
    assert ["a", "b"] in running and not any("c" in r and len(r) > 1 for r in running)
    c = json.loads((tmp_path / "c.json").read_text())
    assert c["seen"] == ["a", "b"]  # both markers were there when c started
    assert c["threads"] == str(max(1, available_cores() // 2))  # each stage's share of the cores
    assert json.loads((tmp_path / "a.json").read_text())["threads"] == c["threads"]


def test_a_thread_count_the_user_set_is_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    stages = [_stage(tmp_path, "a")]
    run_concurrently(stages, stages, 2, lambda now: None, lambda s, secs: None)
    assert json.loads((tmp_path / "a.json").read_text())["threads"] == "3"


def test_a_failed_stage_stops_new_starts_and_the_running_one_finishes(tmp_path):
    # b outlives a (which fails as soon as b has started): d, ready all along, would take a's slot
    stages = [_stage(tmp_path, "a", wait_for="b", fail=True), _stage(tmp_path, "b", wait_for="a", linger=2.0),
              _stage(tmp_path, "c", after=("a",)), _stage(tmp_path, "d")]
    done = []
    with pytest.raises(SuiteError, match=r"stage 'a' failed \(exit 1\): error: boom -- full log: .*a\.log"):
        run_concurrently(stages, stages, 2, lambda now: None, lambda s, secs: done.append(s.name))
    assert done == ["b"] and (tmp_path / "b.json").exists()  # b ran beside a and its result is kept
    assert not (tmp_path / "logs" / "c.log").exists() and not (tmp_path / "logs" / "d.log").exists()


def test_a_stage_whose_maker_is_not_planned_to_run_is_a_plan_error_not_a_hang(tmp_path):
    maker, reader = _stage(tmp_path, "m"), _stage(tmp_path, "r", after=("m",))
    with pytest.raises(SuiteError, match="stage 'r' waits for 'm', which is not planned to run before it"):
        run_concurrently([reader], [maker, reader], 2, lambda now: None, lambda s, secs: None)


def test_ctrl_c_is_passed_on_to_each_running_stage(tmp_path):
    mark = tmp_path / "stopped"
    code = (f"import signal, sys, time, pathlib\n"
            f"def stop(*_):\n    pathlib.Path({str(mark)!r}).write_text('between steps'); sys.exit(130)\n"
            f"signal.signal(signal.SIGINT, stop)\nprint('ready', flush=True)\ntime.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout.readline().strip() == "ready"
    t0 = time.time()
    interrupt([proc])
    assert proc.returncode == 130 and mark.read_text() == "between steps" and time.time() - t0 < 30


def test_jobs_is_checked_before_any_work(tmp_path, capsys):
    assert suite_main(["--jobs", "0", "-o", str(tmp_path / "out")]) == 2
    assert "--jobs 0: give the number of stages to run at once, 1 or more." in capsys.readouterr().err
    assert suite_main(["--jobs", "2", "--launcher", "slurm", "-o", str(tmp_path / "out")]) == 2
    assert "--jobs is the local launcher's" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
