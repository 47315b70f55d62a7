"""Several `hypergrad` commands at once, as on several machines, for one import:
`python -m tests._records_fork N OUT_DIR ARG...` runs `hypergrad ARG...` in N processes.

This process imports the library once and forks N children; child `i` points its
stdout and stderr at `OUT_DIR/out-i` and `OUT_DIR/err-i`, sets `sys.argv` to the command
line a user would type (`hypergrad ARG...`, which records keep), runs the command and
exits with its code. This process exits 0 when every child did, else 1. Forking spares
N - 1 imports of JAX (seconds each on a busy 2-core machine); each child is a process of
its own, with its own pid and database connections.
"""

import os
import sys

from hypergrad.cli import main


def _child(i: int, out_dir: str, argv: list[str]) -> int:
    for stream, name in ((sys.stdout, "out"), (sys.stderr, "err")):
        stream.flush()
        fd = os.open(os.path.join(out_dir, f"{name}-{i}"), os.O_WRONLY | os.O_CREAT, 0o644)
        os.dup2(fd, stream.fileno())
        os.close(fd)
    sys.argv = ["hypergrad", *argv]
    try:
        return main(argv)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def fork(n: int, out_dir: str, argv: list[str]) -> int:
    pids = []
    for i in range(n):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = _child(i, out_dir, argv)
            except BaseException:
                import traceback

                traceback.print_exc()
                sys.stderr.flush()
            finally:
                os._exit(code)
        pids.append(pid)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
    print(" ".join(f"{pid}:{code}" for pid, code in zip(pids, codes, strict=True)))
    return 0 if all(c == 0 for c in codes) else 1


if __name__ == "__main__":
    sys.exit(fork(int(sys.argv[1]), sys.argv[2], sys.argv[3:]))
