"""``blockproc --help`` and every subcommand's help are complete (issue 7, part 5).

The help is rendered through :func:`blockproc.cli.main`, in-process, as a user sees it:
the top level lists every command with a one-line description, and each command's help
describes the command, names its arguments and documents every option.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest

import blockproc
from blockproc import cli
from blockproc.cli import main

ROOT = Path(__file__).resolve().parents[1]
EXPECTED_COMMANDS = {"run", "plan", "status", "demo", "master", "worker"}
COMMANDS = sorted(name for name, cmd in cli.cli.commands.items() if not cmd.hidden)


def render_help(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Return what ``blockproc ARGS --help`` prints, checking it exits 0 and prints no error."""
    code = main([*args, "--help"])
    out, err = capsys.readouterr()
    assert code == 0, f"blockproc {' '.join(args)} --help exited {code}: {err}"
    assert err == ""
    return out


def flat(text: str) -> str:
    """Collapse whitespace, so help wrapped at any width compares with its source."""
    return " ".join(text.split())


def commands_section(text: str) -> dict[str, str]:
    """Parse the ``Commands:`` section of a group's help into ``{name: description}``."""
    lines = text.split("\nCommands:\n", 1)[1].splitlines()
    listed: dict[str, str] = {}
    for line in lines:
        if not line.startswith("  "):
            break
        name, _, description = line.strip().partition(" ")
        listed[name] = description.strip()
    return listed


def visible_options(command: click.Command) -> list[click.Option]:
    return [p for p in command.params if isinstance(p, click.Option) and not p.hidden]


def test_the_expected_commands_exist() -> None:
    # Guard against the parametrised tests below running on too little.
    assert set(COMMANDS) >= EXPECTED_COMMANDS


def test_top_level_help_lists_every_command_with_a_one_line_description(
        capsys: pytest.CaptureFixture[str]) -> None:
    text = render_help(capsys)
    assert text.startswith("Usage: blockproc [OPTIONS] COMMAND [ARGS]...")
    listed = commands_section(text)
    assert sorted(listed) == COMMANDS
    for name, description in listed.items():
        assert description, f"`blockproc --help` lists {name!r} without a description"
        assert not description.endswith("..."), (
            f"the description of {name!r} is cut short ({description!r}); give the "
            f"command a short_help of about 60 characters"
        )


def test_top_level_help_gives_examples_and_exit_codes(
        capsys: pytest.CaptureFixture[str]) -> None:
    text = render_help(capsys)
    assert "Examples:" in text
    for name in ("run", "plan", "status", "demo"):
        assert f"blockproc {name}" in text, f"no example of `blockproc {name}`"
    assert "Exit codes:" in text
    for code in ("0", "1", "2", "130"):
        assert f" {code} " in flat(text)


def test_short_help_option_is_the_same_as_long(capsys: pytest.CaptureFixture[str]) -> None:
    long = render_help(capsys)
    assert main(["-h"]) == 0
    assert capsys.readouterr().out == long


def test_version_option(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    out = capsys.readouterr().out
    assert "blockproc" in out and blockproc.__version__ in out


@pytest.mark.parametrize("name", COMMANDS)
def test_command_help_describes_the_command_and_its_arguments(
        name: str, capsys: pytest.CaptureFixture[str]) -> None:
    command = cli.cli.commands[name]
    text = render_help(capsys, name)
    assert text.startswith(f"Usage: blockproc {name} [OPTIONS]")
    assert command.help and command.help.strip(), f"`blockproc {name}` has no help text"
    assert flat(command.help.split("\n\n", 1)[0]) in flat(text)
    for param in command.params:
        if isinstance(param, click.Argument):
            metavar = param.human_readable_name.upper()
            assert metavar in text.split("Options:", 1)[0].split("\n", 1)[1], (
                f"the help of `blockproc {name}` does not say what {metavar} is"
            )


@pytest.mark.parametrize("name", COMMANDS)
def test_command_help_documents_every_option(
        name: str, capsys: pytest.CaptureFixture[str]) -> None:
    command = cli.cli.commands[name]
    text = render_help(capsys, name)
    options = visible_options(command)
    assert options, f"`blockproc {name}` has no options to check"
    for option in options:
        flags = "/".join(option.opts + option.secondary_opts)
        assert option.help and option.help.strip(), (
            f"`blockproc {name}` option {flags} has no help text; pass help=... to it"
        )
        for flag in option.opts + option.secondary_opts:
            assert flag in text, f"`blockproc {name} --help` does not show {flag}"
        assert flat(option.help) in flat(text), (
            f"`blockproc {name} --help` does not show the help of {flags}"
        )


def test_master_has_the_options_of_run_but_executor() -> None:
    run = {p.name for p in cli.cli.commands["run"].params}
    master = {p.name for p in cli.cli.commands["master"].params}
    assert master == run - {"executor"}


def test_python_dash_m_blockproc_prints_the_help() -> None:
    proc = subprocess.run([sys.executable, "-m", "blockproc", "--help"], capture_output=True,
                          text=True, timeout=120, check=False, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert sorted(commands_section(proc.stdout)) == COMMANDS
