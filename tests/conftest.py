import os
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
TINY_BENCHMARK = str(TESTS / "benchmarks" / "tiny.toml")


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Caches (checkpoints, synthetic data) go to a per-session temp folder, unless the caller
    pinned WSBENCH_CACHE (CI shares one cache between the suite and the quick start)."""
    if "WSBENCH_CACHE" not in os.environ:
        os.environ["WSBENCH_CACHE"] = str(tmp_path_factory.mktemp("wsbench-cache"))
    yield


@pytest.fixture
def testkit():
    """Register the throwaway plugins of tests/wsbench_testkit.py; unregister afterwards."""
    import wsbench_testkit
    from wsbench import plugins

    name = plugins.register(wsbench_testkit, name="wsbench_testkit", distribution="wsbench-testkit", version="0.0")
    yield wsbench_testkit
    plugins.unregister(name)


@pytest.fixture
def tiny_benchmark():
    return TINY_BENCHMARK


def subprocess_env(**extra):
    """Environment for running ``python -m wsbench`` with the testkit plugins loaded."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["WSBENCH_PLUGIN_MODULES"] = "wsbench_testkit"
    env.update(extra)
    return env
