"""What a record says about where it was made: versions, device, CPU, git commit, command.

Interface: `environment(source=None) -> dict` of flat, JSON-serializable attributes:
`versions.hypergrad`, `versions.jax`, `versions.jaxlib`, `versions.optax`,
`versions.numpy`, `versions.optuna`, `versions.python`, `device`, `cpu`, `host`,
`jax_enable_x64` (the precision JAX computed in, which a re-run must restore),
`git_commit` and `git_dirty` (of the repository holding `source`, the objective's file;
`None` outside one), and `command` (`sys.argv`, with the password of any URL in it
masked). `same_machine(a, b)` says whether two such dicts describe the same CPU, device
and versions (then results should agree bit for bit). `worker()` is `{"host", "pid",
"pid_start"}` of this process, which every trial carries from its first write;
`process_start(pid)` tells a process from a later one given the same pid (Linux; `None`
elsewhere).

Invariant: gathering never fails; what cannot be found is `None`.
"""

import functools
import os
import platform
import shlex
import subprocess
import sys
from importlib import metadata

from ._masking import mask_secrets

VERSIONED = ("hypergrad", "jax", "jaxlib", "optax", "numpy", "optuna")
# The keys that must agree for a re-run to be expected bit for bit.
MACHINE_KEYS = (*(f"versions.{p}" for p in VERSIONED), "versions.python", "device", "cpu")
X64 = "jax_enable_x64"
# Who runs a trial: with these, a restart tells a dead local worker's trial from a live one.
HOST_ATTR = "host"
PID_ATTR = "pid"
PID_START_ATTR = "pid_start"


@functools.cache
def _boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return None


def process_start(pid: int) -> str | None:
    """When process `pid` started, as `"BOOT_ID:TICKS"` (Linux), or `None` if unknown.

    A restarted container or machine hands out the same pids again; with this a restart
    tells its predecessor's trial, whose pid may now be its own, from its own.
    """
    boot = _boot_id()
    try:
        with open(f"/proc/{pid}/stat") as f:
            # Field 22, counted after the command name, which may hold spaces and ')'.
            ticks = f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None
    return f"{boot}:{ticks}" if boot else None


@functools.cache
def _own_start(pid: int) -> str | None:  # keyed by pid: a forked child is another process
    return process_start(pid)


def worker() -> dict:
    """`{HOST_ATTR: this host, PID_ATTR: this process, PID_START_ATTR: its start}`."""
    pid = os.getpid()
    return {HOST_ATTR: platform.node(), PID_ATTR: pid, PID_START_ATTR: _own_start(pid)}


def _version(package: str) -> str | None:
    if package == "hypergrad":
        import hypergrad

        return hypergrad.__version__
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


@functools.cache
def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.cache
def _static() -> dict:
    import jax

    try:
        d = jax.devices()[0]
        device = f"{d.platform}:{d.device_kind}"
    except RuntimeError:
        device = None
    out = {f"versions.{p}": _version(p) for p in VERSIONED}
    out["versions.python"] = platform.python_version()
    out["device"] = device
    out["cpu"] = _cpu()
    out["host"] = platform.node()
    return out


@functools.cache
def git_state(directory: str) -> tuple[str | None, bool | None]:
    """`(commit, dirty)` of the git repository holding `directory`, or `(None, None)`."""

    def git(*args):
        return subprocess.run(
            ["git", "-C", directory, *args], capture_output=True, text=True, timeout=10
        )

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return None, None
        status = git("status", "--porcelain", "--untracked-files=no")
        return head.stdout.strip(), bool(status.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None, None


def environment(source: str | None = None) -> dict:
    """The attributes above; `source` is a file or folder of the code that ran."""
    import jax

    out = dict(_static())
    out[X64] = bool(jax.config.jax_enable_x64)
    directory = os.path.dirname(os.path.abspath(source)) if source else os.getcwd()
    if source and os.path.isdir(source):
        directory = source
    out["git_commit"], out["git_dirty"] = git_state(directory)
    # A storage URL on the command line may carry a password: it stays out of the record.
    out["command"] = mask_secrets(" ".join(shlex.quote(a) for a in sys.argv))
    return out


def same_machine(a: dict, b: dict) -> bool:
    return all(a.get(k) == b.get(k) for k in MACHINE_KEYS)
