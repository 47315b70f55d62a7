"""A population split over devices gives the one-device result.

The split runs in a subprocess with four forced host devices
(`XLA_FLAGS=--xla_force_host_platform_device_count=4`; the flag must be set before JAX
starts); the reference runs here, on this process's single CPU device.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from hypergrad.tune._outer import shard_members

ROOT = Path(__file__).resolve().parent.parent

# A logistic population of 8 penalties, 5 outer steps: the population solver (Newton,
# p=6) and descend's compiled loop, as in `tune`.
SCRIPT = """
import json, jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp, numpy as np
from hypergrad import problems
from hypergrad.tune import descend
X, y = problems.synthetic_classification(160, 6, informative=3, seed=0)
pb = problems.logistic(X[:80], y[:80], X[80:], y[80:])
h = {"alpha": jnp.asarray(np.geomspace(1e-3, 1.0, 8))}
res = descend(pb, h, steps=5, batch_hparams=True, throw=True)
shards = {str(s.device) for s in res.state.theta["alpha"].addressable_shards}
print(json.dumps({
    "devices": len(jax.devices()),
    "shards": len(shards),
    "alpha": np.asarray(res.hparams["alpha"]).tolist(),
    "value": np.asarray(res.value).tolist(),
    "solver": res.solver,
}))
"""


def _run(devices):
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.splitlines()[-1])


def test_shard_members_leaves_a_single_device_alone():
    tree = {"a": jnp.arange(8.0)}
    assert shard_members(tree) is tree  # one device here
    assert shard_members(tree, jax.devices() * 3) is tree  # 3 does not divide 8


def test_sharded_population_equals_one_device():
    four, one = _run(4), _run(1)
    assert four["devices"] == 4 and four["shards"] == 4, four
    assert one["devices"] == 1 and one["shards"] == 1
    assert four["solver"] == one["solver"]
    # The same program partitioned: equal up to the order of floating-point reductions.
    np.testing.assert_allclose(four["alpha"], one["alpha"], rtol=1e-9)
    np.testing.assert_allclose(four["value"], one["value"], rtol=1e-9)
