"""The integration kit's guide (``connectors/kit/README.md``) and mapping reference
(``MAPPING.md``) name only commands that exist, with options they take: every ``xietong``
line of their shell blocks is checked against the command's ``--help``, every example
script against its own, and the reference's ``connect validate`` lines are run."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.cli import app

ROOT = Path(__file__).parents[2]
KIT = ROOT / "connectors" / "kit"
GUIDES = (KIT / "README.md", KIT / "MAPPING.md")


def shell_lines(*documents: Path) -> list[str]:
    """The command lines of the documents' ```sh blocks (comments and continuations joined)."""
    lines = []
    for document in documents:
        for block in re.findall(r"```sh\n(.*?)```", document.read_text(encoding="utf-8"), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                command = line.split("  #", 1)[0].split(" # ", 1)[0].strip()
                if command:
                    lines.append(command)
    return lines


def words(line: str) -> list[str]:
    return shlex.split(line.replace("…", "x").replace("<", "'<").replace(">", ">'"))


def inline_commands(*documents: Path) -> list[str]:
    """The ``xietong …`` commands quoted in the documents' text (`xietong registry tokens`)."""
    return [
        span
        for document in documents
        for span in re.findall(r"`(xietong [^`]+)`", document.read_text(encoding="utf-8"))
    ]


XIETONG = sorted(
    {
        line
        for line in [*shell_lines(*GUIDES), *inline_commands(*GUIDES)]
        if line.startswith("xietong ")
    }
)
SCRIPTS = sorted(
    {line for line in shell_lines(*GUIDES) if re.match(r"(python|bash) connectors/kit/", line)}
)


def test_the_guides_have_commands_to_check() -> None:
    assert len(XIETONG) >= 10 and len(SCRIPTS) >= 8


@pytest.mark.parametrize("line", XIETONG)
def test_every_xietong_command_of_the_guides_exists_with_its_options(line: str) -> None:
    args = words(line)[1:]
    path = [a for a in args[:2] if not a.startswith("-") and not a.startswith("<")]
    helped = CliRunner().invoke(app, [*path[:2], "--help"], env={"COLUMNS": "200"})
    assert helped.exit_code == 0, f"{line}: {helped.output}"
    assert "Usage:" in helped.output and " COMMAND " not in helped.output.split("\n")[0], line
    for option in (a.split("=", 1)[0] for a in args if a.startswith("--")):
        assert option in helped.output, f"{line}: {option} is not an option"


@pytest.mark.parametrize("line", SCRIPTS)
def test_every_example_script_of_the_guides_takes_the_arguments_shown(line: str) -> None:
    args = [a for a in words(line) if "=" not in a or a.startswith("-")]
    script = ROOT / args[1]
    assert script.exists(), line
    if args[0] == "bash":
        return  # the curl session takes its variables; test_kit.py runs it
    command = args[2]
    helped = subprocess.run(
        [sys.executable, str(script), command, "--help"], capture_output=True, text=True
    )
    assert helped.returncode == 0, f"{line}: {helped.stderr}"
    for option in (a for a in args[3:] if a.startswith("--")):
        assert option in helped.stdout, f"{line}: {option} is not an option"


def test_the_reference_s_validate_lines_run_on_the_examples() -> None:
    validating = [line for line in shell_lines(KIT / "MAPPING.md") if " validate " in line]
    assert validating
    for line in validating:
        result = CliRunner().invoke(app, words(line)[1:], env={"COLUMNS": "200"})
        assert result.exit_code == 0, f"{line}: {result.output}"
        assert "0 would be dead-lettered" in result.output
