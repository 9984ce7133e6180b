"""Throwaway Redis and PostgreSQL servers for tests.

Each helper starts a private server on a free loopback port inside a temporary directory and
returns a handle whose ``stop()`` shuts the server down and removes the directory. Servers still
running when the interpreter exits are stopped by an ``atexit`` hook as a backstop.

A missing binary raises ``RuntimeError`` saying how to install it, so a test that needs a backend
fails (it does not skip) when the backend is not there.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import IO, Any, Protocol

#: Upper bound, in seconds, for a server to become ready (and for it to stop).
STARTUP_TIMEOUT = 30.0
#: Upper bound, in seconds, for ``initdb`` (it does more work than a server start).
INITDB_TIMEOUT = 120.0
#: Where Debian installs the PostgreSQL server binaries (one directory per major version).
PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"

_HOST = "127.0.0.1"
_PORT_ATTEMPTS = 5
_LOG_TAIL_LINES = 40
_PORT_IN_USE_MARKERS = ("Address already in use", "could not create any TCP/IP sockets")
_DB_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class _Stoppable(Protocol):
    def stop(self) -> None: ...


class _PortInUseError(RuntimeError):
    """The chosen port was taken before the server could bind it; retry with another one."""


# --- registry of live servers (atexit backstop) -------------------------------------------------

_live: dict[int, tuple[int, _Stoppable]] = {}
_live_lock = threading.Lock()


def _register(server: _Stoppable) -> None:
    with _live_lock:
        _live[id(server)] = (os.getpid(), server)


def _unregister(server: _Stoppable) -> None:
    with _live_lock:
        _live.pop(id(server), None)


@atexit.register
def stop_all() -> None:
    """Stop every server this process started that is still running."""
    with _live_lock:
        servers = [srv for pid, srv in _live.values() if pid == os.getpid()]
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop()


# --- small utilities ----------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on the loopback interface that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<no log at {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:]) or "<log is empty>"


def _which_sbin(name: str) -> str | None:
    """Like ``shutil.which``, also looking in the sbin dirs a non-login root PATH may lack."""
    found = shutil.which(name)
    if found is None:
        found = next(
            (f"{d}/{name}" for d in ("/usr/sbin", "/sbin") if os.access(f"{d}/{name}", os.X_OK)),
            None,
        )
    return found


def _missing(binary: str, package: str) -> str:
    return (
        f"`{binary}` was not found, so the test backend cannot be started. Install it with "
        f"`apt-get install {package}` (as root; `sudo apt-get install {package}` otherwise), "
        "or run `bash scripts/test.sh`, which installs missing packages when run as root."
    )


def _run(
    cmd: list[str], *, timeout: float, cwd: Path | None = None, what: str
) -> subprocess.CompletedProcess[bytes]:
    """Run ``cmd`` with output in a temp file (never a pipe a daemon could keep open)."""
    with tempfile.TemporaryFile() as out:
        try:
            proc = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            out.seek(0)
            output = out.read().decode(errors="replace")
            raise RuntimeError(
                f"{what} did not finish within {timeout:.0f}s: {shlex.join(cmd)}\n{output}"
            ) from exc
        out.seek(0)
        proc.stdout = out.read()
    return proc


# --- Redis --------------------------------------------------------------------------------------


class RedisReplyError(RuntimeError):
    """An error reply (``-ERR ...``) from Redis."""


def _read_reply(reader: IO[bytes]) -> Any:
    line = reader.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("connection closed by redis-server")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RedisReplyError(rest.decode(errors="replace"))
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        return None if size < 0 else reader.read(size + 2)[:-2]
    if kind == b"*":
        count = int(rest)
        return None if count < 0 else [_read_reply(reader) for _ in range(count)]
    raise ConnectionError(f"unexpected reply from redis-server: {line!r}")


def redis_command(port: int, *args: str, timeout: float = 5.0) -> Any:
    """Send one command to the Redis server on ``127.0.0.1:port`` over a raw socket."""
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        parts.append(f"${len(data)}\r\n".encode() + data + b"\r\n")
    with socket.create_connection((_HOST, port), timeout=timeout) as sock:
        sock.sendall(b"".join(parts))
        with sock.makefile("rb") as reader:
            return _read_reply(reader)


class RedisServer:
    """A private ``redis-server`` process without persistence."""

    def __init__(
        self, port: int, process: subprocess.Popen[bytes], directory: Path, log_path: Path
    ) -> None:
        self.port = port
        self.process = process
        self.directory = directory
        self.log_path = log_path
        self._stopped = False

    @property
    def host(self) -> str:
        return _HOST

    @property
    def url(self) -> str:
        return f"redis://{_HOST}:{self.port}/0"

    def command(self, *args: str, timeout: float = 5.0) -> Any:
        return redis_command(self.port, *args, timeout=timeout)

    def flushall(self) -> None:
        """Delete every key in every database of this server."""
        self.command("FLUSHALL")

    def log_tail(self) -> str:
        return _tail(self.log_path)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                log = self.log_tail()
                if any(marker in log for marker in _PORT_IN_USE_MARKERS):
                    raise _PortInUseError(f"port {self.port} is in use")
                raise RuntimeError(
                    f"redis-server exited with code {code} while starting on port {self.port}; "
                    f"log tail ({self.log_path}):\n{log}"
                )
            try:
                if self.command("PING", timeout=1.0) == "PONG":
                    # Make sure the answer came from our process, not another server that
                    # grabbed the same port first (ours would then fail to bind and exit).
                    info = self.command("INFO", "server", timeout=1.0)
                    match = re.search(rb"process_id:(\d+)", info or b"")
                    if match and int(match.group(1)) == self.process.pid:
                        return
                    raise _PortInUseError(f"port {self.port} is served by another process")
            except (OSError, RedisReplyError) as exc:
                last_error = exc
            time.sleep(0.05)
        raise RuntimeError(
            f"redis-server on port {self.port} did not answer PING within {timeout:.0f}s "
            f"(last error: {last_error!r}); log tail ({self.log_path}):\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """Kill the server and remove its directory. Safe to call more than once."""
        if self._stopped:
            return
        self._stopped = True
        try:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(timeout=STARTUP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout=STARTUP_TIMEOUT)
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)
            _unregister(self)

    def __repr__(self) -> str:
        return f"RedisServer(url={self.url!r}, pid={self.process.pid})"


def start_redis(timeout: float = STARTUP_TIMEOUT) -> RedisServer:
    """Start ``redis-server`` on a free loopback port and wait until it answers PING."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(_missing("redis-server", "redis-server"))
    for _ in range(_PORT_ATTEMPTS):
        directory = Path(tempfile.mkdtemp(prefix="quiver-redis-"))
        log_path = directory / "redis.log"
        port = free_port()
        cmd = [
            binary,
            "--port", str(port),
            "--bind", _HOST,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(directory),
            "--daemonize", "no",
        ]  # fmt: skip
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=directory
            )
        server = RedisServer(port, process, directory, log_path)
        _register(server)
        try:
            server._wait_ready(timeout)
        except _PortInUseError:
            server.stop()
            continue
        except BaseException:
            server.stop()
            raise
        return server
    raise RuntimeError(f"could not find a free port for redis-server in {_PORT_ATTEMPTS} tries")


# --- moto (the AWS stand-in: S3, DynamoDB) ------------------------------------------------------


class MotoServer:
    """moto's AWS server (``python -m moto.server``) in its own process, on a loopback port.

    In a thread of the test process (``ThreadedMotoServer``) the server would need the GIL to
    answer, while DuckDB may hold it when it pulls Arrow batches from a pyarrow dataset that is
    waiting for that very answer; a separate process avoids the stall.
    """

    REGION = "us-east-1"
    CREDENTIALS = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}

    def __init__(self, port: int, process: subprocess.Popen[bytes]) -> None:
        self.port = port
        self.process = process
        self._stopped = False

    @property
    def endpoint(self) -> str:
        return f"http://{_HOST}:{self.port}"

    def client(self, service: str) -> Any:
        """A boto3 client of ``service`` talking to this server."""
        import boto3

        return boto3.client(
            service, endpoint_url=self.endpoint, region_name=self.REGION, **self.CREDENTIALS
        )

    def stop(self) -> None:
        """Stop the server. Safe to call more than once."""
        if self._stopped:
            return
        self._stopped = True
        try:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(timeout=STARTUP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout=STARTUP_TIMEOUT)
        finally:
            _unregister(self)

    def __repr__(self) -> str:
        return f"MotoServer(endpoint={self.endpoint!r}, pid={self.process.pid})"


def start_moto(timeout: float = STARTUP_TIMEOUT) -> MotoServer:
    """Start moto's server on a free loopback port and wait until it accepts connections."""
    import sys

    try:
        import moto.server  # noqa: F401
    except ImportError:
        raise RuntimeError("moto's server is not installed; pip install 'moto[server]'") from None
    for _ in range(_PORT_ATTEMPTS):
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", _HOST, "-p", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        server = MotoServer(port, process)
        _register(server)
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                server.stop()
                break  # the port was taken: try another one
            try:
                with socket.create_connection((_HOST, port), timeout=1):
                    return server
            except OSError:
                if time.monotonic() > deadline:
                    server.stop()
                    raise RuntimeError(
                        f"moto's server did not accept connections on port {port} within "
                        f"{timeout:.0f}s; pip install 'moto[server]'"
                    ) from None
                time.sleep(0.1)
    raise RuntimeError(f"could not find a free port for moto's server in {_PORT_ATTEMPTS} tries")


# --- PostgreSQL ---------------------------------------------------------------------------------


def _version_key(bindir: str) -> tuple[int, ...]:
    version = Path(bindir).parent.name
    return tuple(int(part) for part in re.findall(r"\d+", version)) or (0,)


def find_pg_binaries() -> tuple[Path, Path]:
    """Paths of ``initdb`` and ``pg_ctl``: Debian's newest version first, then ``PATH``."""
    for bindir in sorted(glob.glob(PG_BIN_GLOB), key=_version_key, reverse=True):
        initdb, pg_ctl = Path(bindir, "initdb"), Path(bindir, "pg_ctl")
        if initdb.is_file() and pg_ctl.is_file():
            return initdb, pg_ctl
    initdb_path, pg_ctl_path = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb_path and pg_ctl_path:
        return Path(initdb_path), Path(pg_ctl_path)
    raise RuntimeError(_missing("initdb/pg_ctl", "postgresql"))


def _ensure_postgres_user() -> pwd.struct_passwd:
    """The ``postgres`` account, created (as a system user) if it does not exist."""
    useradd = _which_sbin("useradd")
    last_output = ""
    for _ in range(20):  # parallel workers may race to create it; /etc/passwd may be locked
        with contextlib.suppress(KeyError):
            return pwd.getpwnam("postgres")
        if useradd is None:
            raise RuntimeError(
                "PostgreSQL cannot run as root and there is no `postgres` user; `useradd` is "
                "missing too (apt-get install passwd)."
            )
        cmd = [useradd, "--system", "--user-group", "--no-create-home"]
        cmd += ["--home-dir", "/nonexistent", "--shell", "/bin/sh", "postgres"]
        last_output = _run(cmd, timeout=STARTUP_TIMEOUT, what="useradd").stdout.decode()
        time.sleep(0.2)
    raise RuntimeError(f"could not create the `postgres` user:\n{last_output}")


class PostgresServer:
    """A private PostgreSQL cluster (``initdb``) run by ``pg_ctl``, with trust authentication."""

    DEFAULT_DATABASE = "quiver_test"
    USER = "postgres"

    def __init__(self, base: Path, pg_ctl: Path, run_as: list[str]) -> None:
        self.base = base
        self.data_dir = base / "data"
        self.socket_dir = base / "sock"
        self.log_path = base / "postgres.log"
        self.port = 0
        self._pg_ctl = pg_ctl
        self._run_as = run_as
        self._started = False
        self._stopped = False

    @property
    def host(self) -> str:
        return _HOST

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the ``quiver_test`` database."""
        return self.url_for(self.DEFAULT_DATABASE)

    def url_for(self, database: str) -> str:
        return f"postgresql+psycopg://{self.USER}@{_HOST}:{self.port}/{database}"

    def log_tail(self) -> str:
        return _tail(self.log_path)

    def _admin_execute(self, statement: str) -> None:
        try:
            import psycopg
        except ImportError as exc:
            raise RuntimeError(
                "psycopg is needed to talk to the test PostgreSQL server: "
                "bash scripts/install.sh dev"
            ) from exc
        with psycopg.connect(
            host=_HOST,
            port=self.port,
            user=self.USER,
            dbname="postgres",
            autocommit=True,
            connect_timeout=int(STARTUP_TIMEOUT),
        ) as conn:
            conn.execute(statement)

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database (named ``name`` or a unique one) and return its URL."""
        name = name or f"quiver_{uuid.uuid4().hex[:12]}"
        if not _DB_NAME_RE.match(name):
            raise ValueError(f"invalid database name {name!r} (want {_DB_NAME_RE.pattern})")
        self._admin_execute(f'CREATE DATABASE "{name}"')
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting any sessions still using it."""
        if not _DB_NAME_RE.match(name):
            raise ValueError(f"invalid database name {name!r}")
        self._admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _pg_ctl_cmd(self, *args: str) -> list[str]:
        return [*self._run_as, str(self._pg_ctl), "-D", str(self.data_dir), *args]

    def _start(self, timeout: float) -> None:
        for _ in range(_PORT_ATTEMPTS):
            self.port = free_port()
            options = " ".join(
                [
                    f"-c port={self.port}",
                    f"-c listen_addresses={_HOST}",
                    f"-c unix_socket_directories={shlex.quote(str(self.socket_dir))}",
                    "-c fsync=off",
                    "-c synchronous_commit=off",
                    "-c full_page_writes=off",
                ]
            )
            cmd = self._pg_ctl_cmd(
                "-l", str(self.log_path), "-w", "-t", str(int(timeout)), "-o", options, "start"
            )
            self._started = True
            result = _run(cmd, timeout=timeout + 10, cwd=self.base, what="pg_ctl start")
            if result.returncode == 0:
                return
            log = self.log_tail()
            self._pg_ctl_stop()
            if any(marker in log for marker in _PORT_IN_USE_MARKERS):
                continue
            raise RuntimeError(
                f"pg_ctl start failed (exit {result.returncode}) on port {self.port}:\n"
                f"{result.stdout.decode(errors='replace')}\n"
                f"server log tail ({self.log_path}):\n{log}"
            )
        raise RuntimeError(f"could not find a free port for PostgreSQL in {_PORT_ATTEMPTS} tries")

    def _pg_ctl_stop(self) -> None:
        cmd = self._pg_ctl_cmd("-m", "immediate", "-w", "-t", str(int(STARTUP_TIMEOUT)), "stop")
        with contextlib.suppress(RuntimeError):
            _run(cmd, timeout=STARTUP_TIMEOUT + 10, cwd=self.base, what="pg_ctl stop")
        # Backstop: if our postmaster is still alive (pg_ctl failed or timed out), kill it. The
        # pid file may be stale, so only kill a process whose command line names our data dir.
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((self.data_dir / "postmaster.pid").read_text().splitlines()[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            if str(self.data_dir).encode() in cmdline:
                os.kill(pid, signal.SIGKILL)

    def stop(self) -> None:
        """Stop the cluster (``pg_ctl stop -m immediate``) and remove its directory."""
        if self._stopped:
            return
        self._stopped = True
        try:
            if self._started:
                self._pg_ctl_stop()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)
            _unregister(self)

    def __repr__(self) -> str:
        return f"PostgresServer(url={self.url!r}, base={str(self.base)!r})"


def _make_base_dir(run_as: list[str], account: pwd.struct_passwd | None) -> Path:
    """A fresh temp dir owned by the account that runs PostgreSQL and reachable by it."""
    candidates: list[str | None] = [None] if account is None else [None, "/tmp"]
    for parent in candidates:
        base = Path(tempfile.mkdtemp(prefix="quiver-pg-", dir=parent))
        (base / "sock").mkdir()
        if account is None:
            return base
        for path in (base, base / "sock"):
            os.chown(path, account.pw_uid, account.pw_gid)
        check = _run([*run_as, "test", "-w", str(base)], timeout=STARTUP_TIMEOUT, what="test -w")
        if check.returncode == 0:
            return base
        shutil.rmtree(base, ignore_errors=True)
    raise RuntimeError(
        "the `postgres` user cannot write to a temporary directory (tried $TMPDIR and /tmp)"
    )


def start_postgres(timeout: float = STARTUP_TIMEOUT) -> PostgresServer:
    """Create a throwaway cluster, start it on a free loopback port, create ``quiver_test``."""
    initdb, pg_ctl = find_pg_binaries()
    run_as: list[str] = []
    account: pwd.struct_passwd | None = None
    if os.geteuid() == 0:
        # PostgreSQL refuses to run as root: run it as the unprivileged `postgres` user.
        account = _ensure_postgres_user()
        runuser = _which_sbin("runuser")
        if runuser is None:
            raise RuntimeError(
                "PostgreSQL cannot run as root and `runuser` is missing "
                "(apt-get install util-linux)."
            )
        run_as = [runuser, "-u", account.pw_name, "--"]
    server = PostgresServer(_make_base_dir(run_as, account), pg_ctl, run_as)
    _register(server)
    try:
        cmd = [*run_as, str(initdb), "-D", str(server.data_dir), "-U", PostgresServer.USER]
        cmd += ["--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"]
        result = _run(cmd, timeout=INITDB_TIMEOUT, cwd=server.base, what="initdb")
        if result.returncode != 0:
            raise RuntimeError(
                f"initdb failed (exit {result.returncode}): {shlex.join(cmd)}\n"
                f"{result.stdout.decode(errors='replace')}"
            )
        server._start(timeout)
        server.create_database(PostgresServer.DEFAULT_DATABASE)
    except BaseException:
        server.stop()
        raise
    return server
