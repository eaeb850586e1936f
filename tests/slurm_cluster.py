"""A real one-node Slurm for the tests: Debian's slurm-wlm and munge (installed with apt when missing, as
root), a slurm.conf in a temporary folder, munged, slurmctld and slurmd started, and stopped afterwards.
Without root (or apt) the tests that need it skip, naming what is missing."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

CONF = """ClusterName=ringtest
SlurmctldHost={host}
SlurmUser=root
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
SchedulerParameters=defer_batch
MinJobAge=3600
NodeName={host} CPUs={cpus} RealMemory={mem} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "not root: starting slurmctld, slurmd and munged needs root"
    if not all(shutil.which(b) for b in ("slurmctld", "slurmd", "munged", "sbatch")):
        if shutil.which("apt-get") is None:
            return "Slurm (Debian's slurm-wlm and munge) is not installed and apt-get is missing"
        r = subprocess.run(["apt-get", "install", "-y", "-q", "slurm-wlm", "munge"], capture_output=True, text=True,
                           env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        if r.returncode != 0:
            return f"apt-get install slurm-wlm munge failed: {r.stderr.strip().splitlines()[-1:]}"
    return None


def _start_munge() -> None:
    key = Path("/etc/munge/munge.key")
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True)
        key.write_bytes(os.urandom(1024))
        shutil.chown(key, "munge", "munge")
        key.chmod(0o400)
    if subprocess.run(["pgrep", "-x", "munged"], capture_output=True).returncode != 0:
        for d in ("/run/munge", "/var/log/munge", "/var/lib/munge"):
            Path(d).mkdir(parents=True, exist_ok=True)
            shutil.chown(d, "munge", "munge")
        subprocess.run(["runuser", "-u", "munge", "--", "/usr/sbin/munged"], check=True)


def _free_port() -> int:
    """A port nothing listens on now (a second cluster, or another service, may hold Slurm's usual ones)."""
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def start(d: Path) -> Path:
    """munged, slurmctld and slurmd of a one-node cluster whose files live in ``d``; returns its slurm.conf
    (point SLURM_CONF at it) once the node is idle."""
    _start_munge()
    for sub in ("state", "spool"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    host = socket.gethostname().split(".")[0]
    conf = d / "slurm.conf"
    conf.write_text(CONF.format(host=host, d=d, cpus=os.cpu_count(), mem=4000, ctld_port=_free_port(),
                                d_port=_free_port()))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    subprocess.run(["slurmctld", "-f", str(conf)], check=True, env=env)
    subprocess.run(["slurmd", "-f", str(conf)], check=True, env=env)
    deadline, state = time.time() + 60, ""
    while time.time() < deadline:
        state = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, env=env).stdout.strip()
        if state == "idle":
            return conf
        time.sleep(0.5)
    raise RuntimeError(f"slurmd never became idle ({state!r}); logs in {d}")


def stop(d: Path) -> None:
    for pid in ("slurmd.pid", "slurmctld.pid"):
        f = d / pid
        if f.exists():
            subprocess.run(["kill", f.read_text().strip()])


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    why = _missing()
    if why:
        pytest.skip(why)
    d = tmp_path_factory.mktemp("slurm")
    try:
        conf = start(d)
    except RuntimeError as e:
        pytest.fail(str(e))
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(conf)
    yield d
    stop(d)
    if old is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = old


if __name__ == "__main__":  # a local cluster to try --launcher slurm on: python -m tests.slurm_cluster DIR [stop]
    import sys

    where = Path(sys.argv[1]).resolve()
    if sys.argv[2:] == ["stop"]:
        stop(where)
        sys.exit(0)
    why = _missing()
    if why:
        sys.exit(f"cannot start a local Slurm: {why}.")
    print(f"export SLURM_CONF={start(where)}")
