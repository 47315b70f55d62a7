"""A worker process sharing a study: `python -m tests._records_worker STORAGE STUDY SEED N`.

Runs `N` trials of random search (seed `SEED`) on the toy problem into the study, as
a second machine or a second process of a real run would. With `HG_READY` and `HG_GO`
set, it announces that it is ready and waits for the go, so that workers overlap.
"""

import os
import sys
import time

import jax

from hypergrad.records import Records
from hypergrad.search import RandomSearch, run

from ._records_objectives import TOY_SPACE, slow_toy


def main(argv: list[str]) -> int:
    jax.config.update("jax_enable_x64", True)
    storage, study, seed, n = argv
    records = Records.open(storage, study)
    if "HG_READY" in os.environ:  # start together with the other workers
        open(os.environ["HG_READY"], "w").close()
        while not os.path.exists(os.environ["HG_GO"]):
            time.sleep(0.01)
    run(slow_toy, RandomSearch(TOY_SPACE, int(seed)), int(n), records=records, seed=int(seed))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
