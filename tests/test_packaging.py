"""The package installs as declared, and constraints.txt pins what the project relies on."""

from __future__ import annotations

import re
import subprocess
import sysconfig
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO_ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = REPO_ROOT / "constraints.txt"
PYPROJECT = REPO_ROOT / "pyproject.toml"


def read_pins() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for raw in CONSTRAINTS.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line)
        assert match, f"constraints.txt: not an exact pin: {raw!r}"
        pins[canonicalize_name(match.group(1))] = Version(match.group(2))
    return pins


def declared_requirements() -> list[Requirement]:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    requirements = [Requirement(r) for r in project["dependencies"]]
    for extra in project.get("optional-dependencies", {}).values():
        requirements += [Requirement(r) for r in extra]
    return requirements


def test_console_script_is_installed():
    # Under `make test` the scripts folder is .venv/bin.
    scripts = Path(sysconfig.get_path("scripts"))
    assert (scripts / "attncourse").is_file(), f"no `attncourse` script in {scripts}; run `make venv`"


def test_console_script_points_at_cli_main():
    entry = [ep for ep in metadata.entry_points(group="console_scripts") if ep.name == "attncourse"]
    assert [ep.value for ep in entry] == ["attncourse.cli:main"]


def test_console_script_runs():
    script = Path(sysconfig.get_path("scripts")) / "attncourse"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "check" in result.stdout, "`attncourse --help` should list the `check` command"


def test_package_is_installed_from_this_checkout():
    import attncourse

    assert Path(attncourse.__file__).resolve().is_relative_to(REPO_ROOT / "src"), (
        f"attncourse is imported from {attncourse.__file__}, not from this checkout's src/"
    )
    assert attncourse.__version__ == metadata.version("attncourse")


def test_torch_is_pinned_first():
    first_pin = next(
        line.strip()
        for line in CONSTRAINTS.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )
    assert first_pin == "torch==2.13.0"


def test_key_pins():
    pins = read_pins()
    assert pins["torch"] == Version("2.13.0")
    assert pins["jupyter-book"] < Version("2"), "Jupyter Book 2 fetches its theme online"
    assert pins["nbgrader"] == Version("0.9.6")
    assert "attncourse" not in pins, "the project itself must not be pinned"


def test_pins_satisfy_pyproject():
    pins = read_pins()
    problems = []
    for requirement in declared_requirements():
        name = canonicalize_name(requirement.name)
        if name not in pins:
            problems.append(f"{requirement} is not pinned in constraints.txt")
        elif not requirement.specifier.contains(pins[name], prereleases=True):
            problems.append(f"{requirement} excludes the pinned {name}=={pins[name]}")
    assert not problems, "\n".join(problems)


def test_installed_versions_match_pins():
    mismatched = []
    for name, pinned in read_pins().items():
        try:
            installed = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            continue
        if installed.public != pinned.public:  # ignores local labels such as +cpu
            mismatched.append(f"{name}: installed {installed}, pinned {pinned}")
    if mismatched:
        pytest.fail(
            "this environment drifted from constraints.txt (run `make venv`, or `make "
            "constraints` after a deliberate upgrade):\n" + "\n".join(mismatched)
        )
