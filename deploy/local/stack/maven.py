"""Resolving the stack's Java artifacts from Maven Central with ``mvn``.

Artifacts go into a Maven repository of our own under the cache directory
(``~/.cache/xietong/m2`` by default), outside git, and are reused on every later start.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from deploy.local.stack.base import StackError, require_tool
from xietong.settings import Settings

# Pinned so that resolution does not depend on the Maven version's default plugin.
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
MAVEN_HINT = "install Maven 3.8+ (Debian: apt-get install maven)"


def maven_repository(settings: Settings) -> Path:
    return settings.cache_dir / "m2"


def run_maven(settings: Settings, args: list[str], what: str, log: Path) -> None:
    """Run one ``mvn`` goal in batch mode; a failure becomes one actionable line."""
    mvn = require_tool("mvn", MAVEN_HINT)
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [
        mvn,
        "-B",
        "--no-transfer-progress",
        f"-Dmaven.repo.local={maven_repository(settings)}",
        *args,
    ]
    with log.open("ab") as output:
        result = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        raise StackError(
            f"could not resolve {what} from Maven Central (mvn exit {result.returncode});"
            f" check the network or the proxy in ~/.m2/settings.xml, details in {log}"
        )


def resolve_artifact(settings: Settings, coordinates: str, log: Path) -> Path:
    """Download one artifact ``group:artifact:version:packaging[:classifier]``; its path."""
    group, artifact, version, packaging, *classifier = coordinates.split(":")
    name = f"{artifact}-{version}" + (f"-{classifier[0]}" if classifier else "") + f".{packaging}"
    path = maven_repository(settings).joinpath(*group.split("."), artifact, version, name)
    if not path.exists():
        run_maven(
            settings,
            [f"{DEPENDENCY_PLUGIN}:get", f"-Dartifact={coordinates}", "-Dtransitive=false"],
            coordinates,
            log,
        )
    if not path.exists():
        raise StackError(f"mvn reported success but {path} is missing; see {log}")
    return path


def resolve_classpath(settings: Settings, pom: Path, properties: dict[str, str], log: Path) -> str:
    """The runtime classpath of ``pom``'s dependencies, resolved once and cached."""
    key = "-".join(f"{value}" for _, value in sorted(properties.items()))
    cache = settings.cache_dir / f"{pom.parent.name}-{key}.classpath"
    if cache.exists():
        classpath = cache.read_text().strip()
        if classpath and all(Path(jar).exists() for jar in classpath.split(":")):
            return classpath
    cache.parent.mkdir(parents=True, exist_ok=True)
    run_maven(
        settings,
        [
            "-f",
            str(pom),
            f"{DEPENDENCY_PLUGIN}:build-classpath",
            "-Dmdep.includeScope=runtime",
            f"-Dmdep.outputFile={cache}",
            *(f"-D{name}={value}" for name, value in properties.items()),
        ],
        f"the dependencies of {pom}",
        log,
    )
    return cache.read_text().strip()
