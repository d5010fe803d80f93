"""A throw-away one-node SLURM cluster (munged + slurmctld + slurmd) for the SLURM tests.

Everything lives in one temporary folder: the munge key and socket, ``slurm.conf``, state and spool
folders, pid and log files. Needs root (slurmd launches job steps) and Debian's ``slurmctld slurmd
slurm-client munge`` packages. By hand: ``python tests/slurm/cluster.py`` starts one, prints how to
use it and stops it on Enter.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "scontrol", "sinfo", "scancel")
PARTITION = "debug"


def missing_binaries() -> list[str]:
    """The SLURM/munge programs not found on PATH (plus /usr/sbin)."""
    return [b for b in BINARIES if _which(b) is None]


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mem_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError("MemTotal not found in /proc/meminfo")


class LocalSlurmCluster:
    """Start with :meth:`start`, use :attr:`env` for client commands, always call :meth:`stop`.

    ``stop`` removes the folder when the cluster made it (no ``root`` given).
    """

    def __init__(self, root: Path | None = None) -> None:
        self._own_root = root is None
        self.root = Path(root or tempfile.mkdtemp(prefix="dskd-slurm-"))
        self.host = socket.gethostname().split(".")[0]
        self.conf = self.root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self._procs: dict[str, subprocess.Popen] = {}

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> None:
        if os.geteuid() != 0:
            raise RuntimeError("the local SLURM cluster needs root (slurmd launches the job steps)")
        missing = missing_binaries()
        if missing:
            raise RuntimeError(f"SLURM/munge programs not found: {', '.join(missing)}")
        # The munge user must reach its files: a world-traversable root, not pytest's 0700 tmp dirs.
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        self._start_munge()
        self._write_conf()
        self._spawn("slurmctld", [_which("slurmctld"), "-D", "-i", "-f", str(self.conf)])
        self._spawn("slurmd", [_which("slurmd"), "-D", "-f", str(self.conf)])
        self._wait_idle(timeout)

    def stop(self) -> None:
        """Cancel every job, then stop slurmd, slurmctld and munged (SIGTERM, then SIGKILL)."""
        if "slurmctld" in self._procs and self._procs["slurmctld"].poll() is None:
            subprocess.run(["scancel", "--full", "--partition", PARTITION], env=self.env, capture_output=True)
            time.sleep(1)
        for name in ("slurmd", "slurmctld"):
            proc = self._procs.pop(name, None)
            if proc is not None:
                _terminate(proc)
        pid_file = self.root / "munge" / "munged.pid"
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass
        self._kill_leftover_steps()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def _kill_leftover_steps(self) -> None:
        """slurmstepd processes of this cluster outlive slurmd when a job was still running."""
        for proc_dir in Path("/proc").iterdir():
            if not proc_dir.name.isdigit():
                continue
            try:
                environ = (proc_dir / "environ").read_bytes()
            except OSError:
                continue
            if f"SLURM_CONF={self.conf}".encode() in environ.split(b"\0"):
                try:
                    os.kill(int(proc_dir.name), signal.SIGKILL)
                except ProcessLookupError:
                    pass

    # -- pieces ----------------------------------------------------------------------------------
    def _start_munge(self) -> None:
        munge_dir = self.root / "munge"
        munge_dir.mkdir(exist_ok=True)
        user = pwd.getpwnam("munge")
        key = munge_dir / "munge.key"
        key.write_bytes(os.urandom(1024))
        for path in (munge_dir, key):
            os.chown(path, user.pw_uid, user.pw_gid)
        munge_dir.chmod(0o755)
        key.chmod(0o400)
        self.munge_socket = munge_dir / "munge.socket"
        cmd = [
            _which("munged"),
            f"--key-file={key}",
            f"--socket={self.munge_socket}",
            f"--pid-file={munge_dir / 'munged.pid'}",
            f"--log-file={munge_dir / 'munged.log'}",
            f"--seed-file={munge_dir / 'munged.seed'}",
            "--force",
        ]
        # munged daemonises itself; it runs as the munge user that owns the key.
        subprocess.run(["runuser", "-u", "munge", "--", *cmd], check=True, capture_output=True, timeout=30)
        deadline = time.monotonic() + 15
        while not self.munge_socket.exists():
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"munged did not create {self.munge_socket}: {self._tail('munge/munged.log')}"
                )
            time.sleep(0.1)

    def _write_conf(self) -> None:
        for sub in ("state", "spool", "log"):
            (self.root / sub).mkdir(exist_ok=True)
        cpus = os.cpu_count() or 1
        mem = int(_mem_mb() * 0.9)
        r = self.root
        self.conf.write_text(
            f"""\
ClusterName=dskdtest
SlurmctldHost={self.host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={self.munge_socket}
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
StateSaveLocation={r / "state"}
SlurmdSpoolDir={r / "spool"}
SlurmctldPidFile={r / "slurmctld.pid"}
SlurmdPidFile={r / "slurmd.pid"}
SlurmctldLogFile={r / "log" / "slurmctld.log"}
SlurmdLogFile={r / "log" / "slurmd.log"}
ReturnToService=2
KillWait=5
MinJobAge=600
JobRequeue=1
SchedulerParameters=sched_interval=1
NodeName={self.host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem} State=UNKNOWN
PartitionName={PARTITION} Nodes={self.host} Default=YES MaxTime=INFINITE State=UP
"""
        )

    def _spawn(self, name: str, cmd: list[str]) -> None:
        log = open(self.root / "log" / f"{name}.stdout", "wb")  # noqa: SIM115 - owned by the process
        self._procs[name] = subprocess.Popen(
            cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def _wait_idle(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            for name, proc in self._procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited with {proc.returncode}: {self._tail(f'log/{name}.log')}"
                    )
            out = subprocess.run(
                ["sinfo", "-h", "-N", "-o", "%T"], env=self.env, capture_output=True, text=True, timeout=10
            )
            state = out.stdout.strip()
            if state == "idle":
                return
            time.sleep(0.5)
        raise RuntimeError(
            f"node not idle after {timeout:.0f}s (state {state!r}): {self._tail('log/slurmd.log')}"
        )

    def _tail(self, rel: str, n: int = 15) -> str:
        path = self.root / rel
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else "(no log)"

    # -- helpers for tests -----------------------------------------------------------------------
    def run(self, *cmd: str, timeout: float = 30.0) -> str:
        """Run a client command (sbatch, scontrol, ...) against this cluster; return its stdout."""
        out = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout)
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr.strip()}")
        return out.stdout

    def job_info(self, job_id: str) -> dict[str, str]:
        """`scontrol show job` as a dict (JobState, Restarts, ExitCode, ...)."""
        text = self.run("scontrol", "show", "job", "-o", job_id)
        return dict(item.split("=", 1) for item in text.split() if "=" in item)

    def wait_job(self, job_id: str, states: set[str], timeout: float) -> dict[str, str]:
        """Poll until the job is in one of ``states``; return its info (TimeoutError with the info if not).

        A requeued job waits for a BeginTime that Slurm sets about two minutes ahead; here it is
        moved to now, so that the test does not sit out the delay.
        """
        deadline = time.monotonic() + timeout
        info: dict[str, str] = {}
        while time.monotonic() < deadline:
            info = self.job_info(job_id)
            if info["JobState"] in states:
                return info
            if info["JobState"] == "PENDING" and info.get("Reason") == "BeginTime":
                self.run("scontrol", "update", f"JobId={job_id}", "StartTime=now")
            time.sleep(0.5)
        raise TimeoutError(f"job {job_id} not in {sorted(states)} after {timeout:.0f}s: {info}")


def _terminate(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


if __name__ == "__main__":
    cluster = LocalSlurmCluster()
    cluster.start()
    try:
        print(f"cluster up in {cluster.root}\n  export SLURM_CONF={cluster.conf}\nEnter stops it.")
        input()
    finally:
        cluster.stop()
