"""The PostgreSQL tier's fixtures: a real PostgreSQL server started by the session (initdb,
postgres, a role and a database), and an `mlflow server` on it with proxied artifacts, the
README's "A shared tracking server" recipe. SQLite serialises writers; PostgreSQL does not, so
races between concurrent trainings, registrations and ablation children show here.

    pytest -m postgres

initdb and postgres refuse to run as root: as root, the cluster belongs to the `postgres` system
user (Debian's package creates it; else `nobody`). Without PostgreSQL binaries the tier skips
with the reason, except under CI (``CI`` set), where it fails: .ci/run installs them.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port, point_tracking_at, start_server, stop_server, wait_healthy

ROLE = "mlflow"


def unavailable(reason: str) -> None:
    """Skip the tier with ``reason``; under CI the tier must run, so fail instead."""
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL tier cannot run under CI: {reason}", pytrace=False)
    pytest.skip(reason)


def postgres_bin() -> Path | None:
    """The folder with initdb, postgres, psql and createdb: PATH first, then Debian's
    /usr/lib/postgresql/<version>/bin (newest version)."""
    found = shutil.which("initdb")
    if found and Path(found).resolve().with_name("postgres").exists():
        return Path(found).resolve().parent
    debian = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")]
    version = lambda folder: int(folder.parent.name) if folder.parent.name.isdigit() else 0  # noqa: E731
    return max(debian, key=version) if debian else None


def cluster_owner() -> tuple[int, int]:
    """The uid and gid the cluster runs as: ours, or an unprivileged system user under root."""
    if os.geteuid() != 0:
        return os.getuid(), os.getgid()
    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
            return entry.pw_uid, entry.pw_gid
        except KeyError:
            continue
    unavailable("running as root and neither a `postgres` nor a `nobody` user exists to own the cluster")


def as_user(owner: tuple[int, int]) -> dict:
    """subprocess arguments that run a program as ``owner`` (only needed, and allowed, as root)."""
    return {"user": owner[0], "group": owner[1], "extra_groups": []} if os.geteuid() == 0 else {}


@dataclass
class Postgres:
    """A running PostgreSQL cluster: superuser through the unix socket in ``root``, role
    ``mlflow`` with ``password`` over TCP on 127.0.0.1:``port``."""

    bin: Path
    root: Path
    port: int
    password: str
    owner: tuple[int, int]
    proc: subprocess.Popen | None = None

    def uri(self, database: str) -> str:
        return f"postgresql+psycopg://{ROLE}:{self.password}@127.0.0.1:{self.port}/{database}"

    def run(self, *args: str) -> str:
        """A client program (psql, createdb) as the cluster's superuser through its socket."""
        program, *rest = args
        result = subprocess.run(
            [str(self.bin / program), "-h", str(self.root), "-p", str(self.port), *rest],
            env=self.env(),
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=60,
            **as_user(self.owner),
        )
        if result.returncode != 0:
            raise RuntimeError(f"{program} failed: {result.stderr.strip()}")
        return result.stdout

    def env(self) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", ""), "LC_ALL": "C", "HOME": str(self.root), "PGUSER": "postgres"}

    def sql(self, query: str, database: str = "postgres") -> str:
        return self.run("psql", "-d", database, "-v", "ON_ERROR_STOP=1", "-tAc", query)

    def create_database(self, name: str) -> str:
        """A new database owned by role mlflow (the README's `createdb --owner mlflow mlflow`); its URI."""
        self.run("createdb", "--owner", ROLE, name)
        return self.uri(name)


def start_postgres(bin_dir: Path, owner: tuple[int, int]) -> Postgres:
    # Not under pytest's tmp root: that is private to the user running the tests (0700), and
    # the cluster's owner must reach its folder.
    root = Path(tempfile.mkdtemp(prefix="sentiment-pg-"))
    os.chown(root, *owner)
    pg = Postgres(bin_dir, root, free_port(), secrets.token_hex(8), owner)
    drop = as_user(owner)
    pwfile = root / "pwfile"
    pwfile.write_text(pg.password)
    os.chown(pwfile, *owner)
    init = subprocess.run(
        [
            str(bin_dir / "initdb"),
            "-D",
            str(root / "data"),
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-locale",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--pwfile",
            str(pwfile),
        ],
        env=pg.env(),
        cwd=root,
        capture_output=True,
        text=True,
        timeout=180,
        **drop,
    )
    if init.returncode != 0:
        unavailable(f"initdb failed: {init.stderr.strip()[-500:]}")
    log = open(root / "postgres.log", "ab")
    # fsync and WAL safety off: a throw-away test cluster, and 2 CPU cores.
    pg.proc = subprocess.Popen(
        [
            str(bin_dir / "postgres"),
            "-D",
            str(root / "data"),
            "-p",
            str(pg.port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"unix_socket_directories={root}",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=200",
        ],
        env=pg.env(),
        cwd=root,
        stdout=log,
        stderr=subprocess.STDOUT,
        **drop,
    )
    deadline = time.time() + 60
    while True:
        if pg.proc.poll() is not None:
            unavailable(f"postgres exited with {pg.proc.returncode}: {(root / 'postgres.log').read_text()[-500:]}")
        ready = subprocess.run([str(bin_dir / "pg_isready"), "-h", str(root), "-p", str(pg.port)], capture_output=True)
        if ready.returncode == 0:
            break
        if time.time() > deadline:
            stop_postgres(pg)
            unavailable("postgres did not accept connections within 60 s")
        time.sleep(0.2)
    # The README's recipe: a login role with a password, and a database it owns.
    pg.sql(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{pg.password}'")
    return pg


def stop_postgres(pg: Postgres) -> None:
    if pg.proc and pg.proc.poll() is None:
        pg.proc.send_signal(signal.SIGINT)  # "fast" shutdown: roll back open sessions, then stop
        try:
            pg.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pg.proc.kill()
            pg.proc.wait()
    shutil.rmtree(pg.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Postgres:
    """A PostgreSQL server for the whole session, torn down at its end."""
    try:
        import psycopg  # noqa: F401  (the driver of the server's postgresql+psycopg:// store)
    except ImportError:
        unavailable("the psycopg driver is not installed (pip install -e '.[test]')")
    bin_dir = postgres_bin()
    if bin_dir is None:
        unavailable(
            "no PostgreSQL server binaries (initdb) in PATH or /usr/lib/postgresql/*/bin; apt-get install postgresql"
        )
    pg = start_postgres(bin_dir, cluster_owner())
    try:
        yield pg
    finally:
        stop_postgres(pg)


def start_pg_server(root: Path, port: int, database_uri: str) -> subprocess.Popen:
    """The README's shared tracking server on this machine: PostgreSQL store, proxied artifacts."""
    return start_server(root, port, ["--serve-artifacts"], backend_store_uri=database_uri)


@dataclass
class PgServer:
    uri: str
    database_uri: str
    root: Path


@pytest.fixture(scope="session")
def pg_server(postgres, tmp_path_factory) -> PgServer:
    """A tracking server on PostgreSQL for the whole session (the first start creates MLflow's tables)."""
    database_uri = postgres.create_database("mlflow")
    root = tmp_path_factory.mktemp("mlflow-pg-server")
    port = free_port()
    proc = start_pg_server(root, port, database_uri)
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(uri, proc, timeout_s=180)  # the first start runs every schema migration
        yield PgServer(uri, database_uri, root)
    finally:
        stop_server(proc)


@pytest.fixture
def pg_tracking_env(pg_server, monkeypatch, tmp_path) -> dict[str, str]:
    """`tracking_env` on the PostgreSQL-backed server: this test and its subprocesses log there,
    in an experiment of their own."""
    return point_tracking_at(pg_server.uri, monkeypatch, tmp_path)
