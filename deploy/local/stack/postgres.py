"""PostgreSQL from the Debian packages, as a private cluster of the platform.

The cluster lives in ``.local/postgres/`` with its own port (5433 by default), so it
never touches the system cluster. PostgreSQL refuses to run as root; when ``make up``
is run by root the cluster belongs to the ``postgres`` system user the Debian package
creates. Clients connect over TCP on loopback with a password.
"""

from __future__ import annotations

import glob
import grp
import hashlib
import os
import pwd
import shutil
import signal
import stat
import subprocess
from pathlib import Path

import psycopg2
from psycopg2 import sql

from deploy.local.stack.base import LocalService, StackError
from xietong.settings import (
    CREDIT_DATABASE,
    LOOPBACK,
    REGISTRY_DATABASE,
    Settings,
)

POSTGRES_HINT = "install the PostgreSQL server (Debian: apt-get install postgresql)"
SYSTEM_USER = "postgres"


def postgres_bindir() -> Path:
    """The directory of the newest installed PostgreSQL server binaries."""
    pg_config = shutil.which("pg_config")
    candidates = []
    if pg_config:
        result = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=False
        )
        candidates.append(Path(result.stdout.strip()))
    candidates += sorted(
        (Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin")),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    for bindir in candidates:
        if (bindir / "postgres").exists() and (bindir / "initdb").exists():
            return bindir
    raise StackError(
        f"the PostgreSQL server binaries (initdb, postgres) were not found: {POSTGRES_HINT}"
    )


def _reachable_by(path: Path, user: str) -> bool:
    """Whether ``user`` may enter every existing directory from ``/`` down to ``path``."""
    try:
        account = pwd.getpwnam(user)
    except KeyError:
        return False
    groups = {account.pw_gid} | {g.gr_gid for g in grp.getgrall() if user in g.gr_mem}
    current = Path("/")
    for part in path.resolve().parts[1:]:
        current = current / part
        if not current.exists():
            break
        mode = current.stat()
        if mode.st_uid == account.pw_uid:
            allowed = mode.st_mode & stat.S_IXUSR
        elif mode.st_gid in groups:
            allowed = mode.st_mode & stat.S_IXGRP
        else:
            allowed = mode.st_mode & stat.S_IXOTH
        if not allowed:
            return False
    return True


def pgpass_file(settings: Settings) -> Path:
    """``.local/pgpass``: the local cluster's password in libpq's password file (mode
    0600), so a printed ``PGPASSFILE=… psql 'postgresql://user@host:port/db'`` line works
    as copied without the password ever being shown. Written again on each call."""
    path = settings.home / "pgpass"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(
        f"{LOOPBACK}:{settings.postgres_port}:*:{settings.postgres_user}:"
        f"{settings.postgres_password.get_secret_value()}\n"
    )
    return path


class PostgresServer(LocalService):
    name = "postgres"
    port_setting = "XIETONG_POSTGRES_PORT"
    start_timeout = 60.0
    # SIGINT is PostgreSQL's "fast" shutdown: it does not wait for clients to leave.
    stop_signal = signal.SIGINT

    @property
    def port(self) -> int:
        return self.settings.postgres_port

    @property
    def endpoint(self) -> str:
        return f"postgresql://{LOOPBACK}:{self.port}"

    @property
    def is_external(self) -> bool:
        return self.settings.postgres_is_external

    @property
    def data_dir(self) -> Path:
        """``.local/postgres``, unless the ``postgres`` user could not reach it.

        Run by root, the cluster belongs to the ``postgres`` user, which must be able to
        enter every directory above it; a checkout under ``/root`` is not. The socket
        path must also stay under the 107 bytes a Unix socket name allows. In either
        case the cluster lives in a directory of its own under ``/var/tmp`` instead,
        named after the checkout so that two checkouts never share one.
        """
        wanted = self.settings.home / self.name
        socket_name = wanted / "socket" / f".s.PGSQL.{self.port}"
        if os.geteuid() == 0 and (
            not _reachable_by(wanted, SYSTEM_USER) or len(str(socket_name)) > 100
        ):
            digest = hashlib.sha1(str(wanted.resolve()).encode(), usedforsecurity=False)
            return Path("/var/tmp") / f"xietong-postgres-{digest.hexdigest()[:12]}"
        return wanted

    @property
    def cluster_dir(self) -> Path:
        return self.data_dir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.data_dir / "socket"

    def run_as_user(self) -> str | None:
        try:
            pwd.getpwnam(SYSTEM_USER)
        except KeyError as missing:
            raise StackError(
                f"PostgreSQL cannot run as root and there is no '{SYSTEM_USER}' user: "
                f"{POSTGRES_HINT}, or run make up as an ordinary user"
            ) from missing
        return SYSTEM_USER

    def _owned_by_runner(self, *paths: Path) -> None:
        if os.geteuid() != 0:
            return
        account = pwd.getpwnam(self.run_as_user() or SYSTEM_USER)
        for path in paths:
            os.chown(path, account.pw_uid, account.pw_gid)

    def prepare(self) -> None:
        bindir = postgres_bindir()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        self._owned_by_runner(self.data_dir, self.socket_dir)
        if not (self.cluster_dir / "PG_VERSION").exists():
            self._initdb(bindir)

    def _initdb(self, bindir: Path) -> None:
        password_file = self.data_dir / "initdb.pw"
        password_file.write_text(self.settings.postgres_password.get_secret_value() + "\n")
        self._owned_by_runner(password_file)
        user = self.run_as_user() if os.geteuid() == 0 else None
        try:
            result = subprocess.run(
                [
                    str(bindir / "initdb"),
                    "--pgdata",
                    str(self.cluster_dir),
                    "--username",
                    self.settings.postgres_user,
                    "--pwfile",
                    str(password_file),
                    "--auth",
                    "scram-sha-256",
                    "--encoding",
                    "UTF8",
                    "--locale",
                    "C.UTF-8",
                ],
                capture_output=True,
                text=True,
                user=user,
                group=user,
                extra_groups=[] if user else None,
                cwd=self.data_dir,
                check=False,
            )
        finally:
            password_file.unlink(missing_ok=True)
        if result.returncode != 0:
            lines = (result.stderr or result.stdout).strip().splitlines()
            raise StackError(f"initdb in {self.cluster_dir} failed: {lines[-1] if lines else '?'}")

    def command(self) -> list[str]:
        return [
            str(postgres_bindir() / "postgres"),
            "-D",
            str(self.cluster_dir),
            "-p",
            str(self.port),
            "-c",
            f"listen_addresses={LOOPBACK}",
            "-c",
            f"unix_socket_directories={self.socket_dir}",
            "-c",
            "max_connections=200",
            "-c",
            "shared_buffers=128MB",
            # Local stack only: durability across OS crashes is not worth the fsyncs here.
            "-c",
            "synchronous_commit=off",
        ]

    def _connect(self, database: str = "postgres") -> psycopg2.extensions.connection:
        return psycopg2.connect(
            host=LOOPBACK,
            port=self.port,
            user=self.settings.postgres_user,
            password=self.settings.postgres_password.get_secret_value(),
            dbname=database,
            connect_timeout=2,
        )

    def is_ready(self) -> bool:
        try:
            self._connect().close()
        except psycopg2.OperationalError:
            return False
        return True

    @property
    def databases(self) -> tuple[str, ...]:
        """The platform's databases, created when missing."""
        return (REGISTRY_DATABASE, CREDIT_DATABASE, self.settings.schema_registry_database)

    def after_start(self) -> None:
        connection = self._connect()
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT datname FROM pg_database")
                existing = {row[0] for row in cursor.fetchall()}
                for database in self.databases:
                    if database not in existing:
                        cursor.execute(
                            sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database))
                        )
        finally:
            connection.close()
