"""Plugin system: hookspecs documented, registration, disabling, failures, did-you-mean."""

import inspect
import json

import pytest
from click.testing import CliRunner

from wsbench import hookspecs, plugins
from wsbench.cli import cli
from wsbench.errors import PluginNotFound


def test_every_hook_is_documented_and_typed():
    hooks = [f for n, f in vars(hookspecs).items() if callable(f) and hasattr(f, "wsbench_spec")]
    assert {h.__name__ for h in hooks} == {"register_predictors", "register_generators", "register_segmenters",
                                           "register_datasets", "register_commands"}
    for h in hooks:
        doc = inspect.getdoc(h) or ""
        assert len(doc) > 80, f"{h.__name__} needs a real docstring"
        sig = inspect.signature(h)
        assert all(p.annotation is not inspect.Parameter.empty for p in sig.parameters.values()), h.__name__


def test_builtins_register_through_hooks():
    reg = plugins.get_registry()
    builtin_modules = {m["module"] for m in reg.modules if m["source"] == "builtin"}
    assert builtin_modules, "no built-in plugin module registered"
    assert builtin_modules <= set(plugins.DEFAULT_PLUGINS)
    assert not [f for f in reg.failures if f[0].startswith("builtin")], reg.failures


def test_runtime_plugin_is_listed_and_removed(testkit):
    reg = plugins.get_registry()
    info = reg.get("segmenter", "intensity")
    assert info.distribution == "wsbench-testkit" and info.source == "runtime"
    out = CliRunner().invoke(cli, ["plugins", "--json"])
    assert out.exit_code == 0
    names = {p["name"] for p in json.loads(out.output)["plugins"]}
    assert {"intensity", "tiny-blobs", "tiny-mean"} <= names


def test_unregistered_after_fixture():
    assert "intensity" not in plugins.get_registry().plugins["segmenter"]


def test_unknown_name_suggests(testkit):
    with pytest.raises(PluginNotFound) as e:
        plugins.get("segmenter", "intensty")
    msg = str(e.value)
    assert "Did you mean 'intensity'" in msg and "Available segmenters:" in msg


def test_disable_env_blocks_plugins(monkeypatch):
    monkeypatch.setenv("WSBENCH_DISABLE_PLUGINS", "blob-dot")
    plugins.reset()
    try:
        assert "blob-dot" not in plugins.get_registry().plugins["segmenter"]
    finally:
        monkeypatch.delenv("WSBENCH_DISABLE_PLUGINS")
        plugins.reset()


def test_broken_plugin_module_is_reported_not_fatal(monkeypatch):
    monkeypatch.setenv("WSBENCH_PLUGIN_MODULES", "wsbench_no_such_module_xyz")
    plugins.reset()
    try:
        runner = CliRunner()
        out = runner.invoke(cli, ["plugins"])
        assert out.exit_code == 0
        assert "wsbench_no_such_module_xyz" in out.output and "failed to load" in out.output
        assert runner.invoke(cli, ["ls", "segmenters"]).exit_code == 0
    finally:
        monkeypatch.delenv("WSBENCH_PLUGIN_MODULES")
        plugins.reset()


def test_first_party_plugin_package_is_an_entry_point():
    pytest.importorskip("wsbench_blob_dot", reason="install plugins/wsbench-blob-dot (README set-up)")
    info = plugins.get("segmenter", "blob-dot")
    assert info.distribution == "wsbench-blob-dot" and info.source.startswith("entry point")


def test_ls_shows_options(testkit):
    out = CliRunner().invoke(cli, ["ls", "segmenters"])
    assert out.exit_code == 0
    assert "segmenter.sleep" in out.output and "intensity" in out.output
