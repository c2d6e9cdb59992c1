"""Every command has --help with a worked example; errors are one line, not tracebacks."""

import click
from click.testing import CliRunner

from wsbench.cli import cli


def _walk(group, prefix=()):
    for name, cmd in group.commands.items():
        yield prefix + (name,), cmd
        if isinstance(cmd, click.Group):
            yield from _walk(cmd, prefix + (name,))


def test_every_command_has_help_with_example():
    runner = CliRunner()
    commands = list(_walk(cli))
    names = {" ".join(p) for p, _ in commands}
    assert {"run", "plugins", "ls", "train predictor", "train generator"} <= names
    missing = []
    for path, cmd in commands:
        res = runner.invoke(cli, [*path, "--help"])
        assert res.exit_code == 0, (path, res.output)
        if "wsbench" not in res.output or "xample" not in res.output:
            missing.append(" ".join(path))
    assert not missing, f"commands without a worked example in --help: {missing}"


def test_bad_kv_option_is_one_line():
    res = CliRunner().invoke(cli, ["run", "-s", "gradcam", "-o", "t0=0.5"])
    assert res.exit_code == 2
    assert "expected ROLE.KEY=VALUE" in res.output and "Traceback" not in res.output
