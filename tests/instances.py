"""Private, throw-away database servers for tests that stop, kill and restart them.

The machine's shared servers (PostgreSQL on 127.0.0.1:5432, MariaDB on 127.0.0.1:3306) are
never touched here: every instance lives in its own folder under /tmp
(``sessionstate-pg-*`` / ``sessionstate-mariadb-*``), listens on its own free port on 127.0.0.1
only, keeps its unix socket inside that folder, and is only ever signalled through a process id
that this module started or whose command line names that folder.

    with PostgresInstance() as pg:          # initdb + start; cleanup() on the way out
        psycopg.connect(pg.url)             # postgresql://postgres@127.0.0.1:PORT/postgres
        pg.stop(mode="immediate")           # crash-like stop; "fast" is the clean one
        pg.start()                          # same port, same data
        pg.restart()

    with MariaDBInstance() as my:           # mysql://root@127.0.0.1:PORT/test
        ...

Every wait is bounded (``timeout``, 30 s by default) and a failed start raises InstanceError
with the tail of the server's log. Instances still alive when the interpreter exits are cleaned
up by an atexit hook, and the folders of instances whose owning process died without cleaning up
(say, a test run killed with SIGKILL) are reaped, servers included, when the next instance is
created.
"""

import atexit
import glob
import json
import os
import pwd
import random
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

__all__ = ["InstanceError", "PostgresInstance", "MariaDBInstance", "free_port",
           "reap_stale_instances"]

TMP_ROOT = "/tmp"
STOP_MODES = ("fast", "immediate", "kill")
_OWNER_FILE = "owner.json"
_POLL = 0.05
_random = random.SystemRandom()     # no test's random.seed() may make two runs pick alike


class InstanceError(RuntimeError):
    """A private server could not be set up, started or stopped."""


def _ephemeral_range():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as handle:
            low, high = (int(part) for part in handle.read().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def free_port(host="127.0.0.1"):
    """A port that nothing is bound to right now, below the kernel's ephemeral range.

    Not simply what binding to port 0 hands out: that comes from the ephemeral range, from
    which the kernel also takes the local ports of outgoing connections, and a client socket
    (even in TIME_WAIT, for a minute) on the port of a stopped instance would make its restart
    fail with "Address already in use". A port below that range is never taken that way.
    """
    low = 20000
    high = _ephemeral_range()[0] - 1
    for _ in range(200):
        port = _random.randint(low, high) if high > low else 0
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise InstanceError("found no free port on %s" % host)


# ---- processes ----------------------------------------------------------------------------

def _proc_stat(pid):
    """(state, ppid, starttime) of a process from /proc, or None when there is none."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as handle:
            data = handle.read().decode("ascii", "replace")
    except OSError:
        return None
    fields = data[data.rindex(")") + 2:].split()
    return fields[0], int(fields[1]), fields[19]


def _pid_alive(pid):
    """True while a process runs; a zombie counts as gone."""
    if not pid or pid <= 0:
        return False
    stat = _proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def _cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def _descendants(pid):
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _proc_stat(int(entry))
            if stat is not None:
                children.setdefault(stat[1], []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            found.append(child)
            todo.append(child)
    return found


def _wait_gone(pids, timeout):
    deadline = time.monotonic() + timeout
    while any(_pid_alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(_POLL)
    return True


def _kill_tree(pid, timeout):
    """SIGKILL a process and all its descendants, then wait (bounded) until all are gone."""
    pids = [pid] + _descendants(pid)
    for each in pids:
        try:
            os.kill(each, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    if not _wait_gone(pids, timeout):
        raise InstanceError("processes %s survived SIGKILL for %.0f s" % (pids, timeout))


def _clean_env():
    """The environment for server tools: no PG*/MYSQL* variable may redirect them elsewhere.

    TZ is fixed because initdb writes the zone it runs in into postgresql.conf as the server's
    default, and mariadbd takes its system_time_zone from it (tests/conftest.py sets a
    non-UTC TZ for the whole test run).
    """
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PG", "MYSQL", "MARIADB"))}
    env["LC_ALL"] = "C"     # English messages, which start() reads on failure
    env["TZ"] = "UTC"       # the servers' default zone, whatever zone the tests run in
    return env


def _tail(path, lines=40, offset=0):
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _own_start_time():
    stat = _proc_stat(os.getpid())
    return stat[2] if stat else None


# ---- clean-up of everything this module started ---------------------------------------------

_live = set()
_live_lock = threading.Lock()
_reaped = False


def _cleanup_all():
    with _live_lock:
        instances = list(_live)
    for instance in instances:
        if instance._owner_pid != os.getpid():
            continue                        # a forked child must not clean up its parent's
        try:
            instance.cleanup()
        except Exception:                   # at exit, go on with the others regardless
            pass


atexit.register(_cleanup_all)


def reap_stale_instances():
    """Stop and delete the instances left behind by processes that died without cleaning up.

    Only folders named like ours, whose owner.json names a process that is gone, are touched,
    and only processes whose command line names such a folder are killed.
    """
    reaped = []
    for base in glob.glob(os.path.join(TMP_ROOT, "sessionstate-pg-*")) \
            + glob.glob(os.path.join(TMP_ROOT, "sessionstate-mariadb-*")):
        try:
            with open(os.path.join(base, _OWNER_FILE)) as handle:
                owner = json.load(handle)
        except (OSError, ValueError):
            continue            # not ours, or still being created: leave it alone
        stat = _proc_stat(owner.get("pid", 0))
        if stat is not None and stat[0] not in ("Z", "X") and stat[2] == owner.get("start"):
            continue            # its owner still runs
        marker = os.path.join(base, "")
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) != os.getpid() and marker in _cmdline(int(entry)):
                try:
                    _kill_tree(int(entry), 10)
                except InstanceError:
                    pass
        shutil.rmtree(base, ignore_errors=True)
        reaped.append(base)
    return reaped


# ---- the instances ------------------------------------------------------------------------

class _ServerInstance:
    """What both servers share: folder, port, bounded start/stop, clean-up, context manager."""

    kind = "server"
    prefix = "sessionstate-server-"

    def __init__(self, *, timeout=30.0, server_args=(), port=None):
        global _reaped
        reason = self.unavailable_reason()
        if reason:
            raise InstanceError("%s is not available here: %s" % (self.kind, reason))
        if not _reaped:
            _reaped = True
            reap_stale_instances()
        self.timeout = float(timeout)
        self.server_args = list(server_args)
        self.host = "127.0.0.1"
        self._fixed_port = port is not None
        self.port = port or free_port(self.host)
        self._initialized = False
        self._started_once = False
        self._owner_pid = os.getpid()
        self.base_dir = tempfile.mkdtemp(prefix=self.prefix, dir=TMP_ROOT)
        with open(os.path.join(self.base_dir, _OWNER_FILE), "w") as handle:
            json.dump({"pid": os.getpid(), "start": _own_start_time()}, handle)
        with _live_lock:
            _live.add(self)

    # -- what each server fills in
    @classmethod
    def unavailable_reason(cls):
        """Why this server cannot be run here, or None when it can."""
        raise NotImplementedError

    def _initialize(self):
        raise NotImplementedError

    def _launch(self, deadline):
        raise NotImplementedError

    def _halt(self, mode, pid):
        raise NotImplementedError

    @property
    def pid(self):
        """The server's main process id while it runs, else None."""
        raise NotImplementedError

    @property
    def url(self):
        raise NotImplementedError

    def _log_paths(self):
        raise NotImplementedError

    # -- shared behaviour
    @classmethod
    def is_available(cls):
        """True when this machine has what it takes to run this server."""
        return cls.unavailable_reason() is None

    @property
    def running(self):
        return self.pid is not None

    def log_tail(self, lines=40, offsets=None):
        parts = []
        for path in self._log_paths():
            text = _tail(path, lines, (offsets or {}).get(path, 0))
            if text.strip():
                parts.append("--- %s ---\n%s" % (path, text))
        return "\n".join(parts) or "(the log is empty)"

    def _log_offsets(self):
        offsets = {}
        for path in self._log_paths():
            try:
                offsets[path] = os.path.getsize(path)
            except OSError:
                offsets[path] = 0
        return offsets

    def start(self):
        """Start the server (initializing it the first time) and wait until it takes connections.

        Returns self. Raises InstanceError, with the log's tail, if it does not come up within
        ``timeout`` seconds; nothing of the failed attempt is left running.
        """
        if self.base_dir is None:
            raise InstanceError("%s was cleaned up; make a new one" % self.kind)
        if self.running:
            return self
        if not self._initialized:
            self._initialize()
            self._initialized = True
        attempts = 1 if (self._started_once or self._fixed_port) else 3
        for attempt in range(attempts):
            offsets = self._log_offsets()
            started = time.monotonic()
            try:
                self._launch(started + self.timeout)
            except Exception as exc:
                tail = self.log_tail(offsets=offsets)
                self._force_stop()
                if "Address already in use" in tail and attempt + 1 < attempts:
                    self.port = free_port(self.host)   # lost a race for the port: try another
                    continue
                raise InstanceError("%s on %s:%s did not start (%s) after %.1f s; log tail:\n%s"
                                    % (self.kind, self.host, self.port, exc,
                                       time.monotonic() - started, tail)) from None
            self._started_once = True
            return self

    def stop(self, mode="fast"):
        """Stop the server; a no-op when it is not running.

        mode "fast": a clean shutdown (PostgreSQL's pg_ctl -m fast, MariaDB's SIGTERM).
        mode "immediate": crash-like, recovery runs at the next start (PostgreSQL's
        pg_ctl -m immediate, MariaDB's SIGKILL).
        mode "kill": SIGKILL to the server and every process of it, for both.
        """
        if mode not in STOP_MODES:
            raise ValueError("mode must be one of %s, not %r" % (", ".join(STOP_MODES), mode))
        pid = self.pid
        if pid is None:
            return
        try:
            self._halt(mode, pid)
            if not _wait_gone([pid], self.timeout):
                raise InstanceError("process %d still runs" % pid)
        except Exception as exc:
            self._force_stop()
            raise InstanceError("%s on port %s did not stop cleanly (%s); it was killed; "
                                "log tail:\n%s" % (self.kind, self.port, exc,
                                                   self.log_tail())) from None

    def restart(self, mode="fast"):
        """stop(mode), then start(); the port, URL and data stay the same. Returns self."""
        self.stop(mode)
        return self.start()

    def _force_stop(self):
        """Whatever the state, make sure no process of this instance is left."""
        pid = self.pid
        if pid is not None:
            _kill_tree(pid, self.timeout)

    def cleanup(self):
        """Stop the server if it runs (killing it if it will not stop) and delete its folder."""
        if self.base_dir is None:
            return
        try:
            try:
                self.stop("fast")
            except InstanceError:
                pass                        # stop() has killed it already
            finally:
                self._force_stop()
        finally:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self.base_dir = None
            with _live_lock:
                _live.discard(self)

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(self, *exc_info):
        self.cleanup()

    def __repr__(self):
        return "<%s %s running=%s dir=%s>" % (type(self).__name__, self.url, self.running,
                                              self.base_dir)


def _postgres_bindir():
    found = []
    for path in glob.glob("/usr/lib/postgresql/*/bin"):
        version = os.path.basename(os.path.dirname(path))
        if all(os.access(os.path.join(path, tool), os.X_OK)
               for tool in ("initdb", "pg_ctl", "postgres")):
            try:
                found.append((tuple(int(part) for part in version.split(".")), path))
            except ValueError:
                continue
    return max(found)[1] if found else None


class PostgresInstance(_ServerInstance):
    """A PostgreSQL cluster of its own: initdb into a temp folder, trust auth, run as postgres.

    server_args are extra postgres options, e.g. ["-c", "max_connections=20"].
    """

    kind = "PostgreSQL"
    prefix = "sessionstate-pg-"
    user = "postgres"
    database = "postgres"

    def __init__(self, **kwargs):
        self.bindir = _postgres_bindir()
        super().__init__(**kwargs)
        self.datadir = os.path.join(self.base_dir, "data")
        self.socket_dir = os.path.join(self.base_dir, "sock")
        self.log_path = os.path.join(self.base_dir, "server.log")
        if os.geteuid() == 0:
            # The server refuses to run as root: the folder is the postgres user's.
            account = pwd.getpwnam("postgres")
            os.mkdir(self.socket_dir)
            for path in (self.base_dir, self.socket_dir):
                os.chown(path, account.pw_uid, account.pw_gid)
            self._as_user = [shutil.which("runuser") or "/usr/sbin/runuser",
                             "-u", "postgres", "--"]
        else:
            os.mkdir(self.socket_dir)
            self._as_user = []

    @classmethod
    def unavailable_reason(cls):
        if _postgres_bindir() is None:
            return "no initdb/pg_ctl/postgres under /usr/lib/postgresql/*/bin"
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                return "running as root, but there is no OS user postgres to run the server as"
            if not (shutil.which("runuser") or os.path.exists("/usr/sbin/runuser")):
                return "running as root, but there is no runuser to switch to postgres"
        return None

    def _tool(self, name):
        return os.path.join(self.bindir, name)

    def _run(self, args, timeout):
        try:
            return subprocess.run(self._as_user + args, cwd=self.base_dir, env=_clean_env(),
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, timeout=timeout,
                                  start_new_session=True)
        except subprocess.TimeoutExpired:
            raise InstanceError("%s took more than %.0f s" % (os.path.basename(args[0]),
                                                              timeout)) from None

    def _initialize(self):
        result = self._run([self._tool("initdb"), "-D", self.datadir, "-U", self.user,
                            "-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync"],
                           self.timeout)
        if result.returncode != 0:
            raise InstanceError("initdb failed (exit %d):\n%s"
                                % (result.returncode, result.stdout.decode("utf-8", "replace")))

    def _server_options(self):
        return " ".join(shlex.quote(arg) for arg in
                        ["-p", str(self.port), "-k", self.socket_dir,
                         "-c", "listen_addresses=" + self.host] + self.server_args)

    def _clear_stale_locks(self):
        """Delete the lock files that a killed postmaster left behind.

        After a SIGKILL the postmaster cannot remove postmaster.pid and the socket's lock file,
        and the server refuses to start while the pid in them exists, which includes a zombie
        that its adoptive parent has not reaped yet (PID 1 on this kind of machine reaps only
        every second or two). Called only when no live process of this instance is there.
        """
        for path in (os.path.join(self.datadir, "postmaster.pid"),
                     os.path.join(self.socket_dir, ".s.PGSQL.%d.lock" % self.port)):
            try:
                with open(path) as handle:
                    pid = int(handle.readline().strip())
            except (OSError, ValueError):
                continue
            if not _pid_alive(pid) or os.path.join(self.base_dir, "") not in _cmdline(pid):
                os.unlink(path)

    def _launch(self, deadline):
        if self.pid is None:
            self._clear_stale_locks()
        wait = max(1, int(deadline - time.monotonic()))
        # -l matters beyond logging: without it the postmaster would keep pg_ctl's pipes open.
        result = self._run([self._tool("pg_ctl"), "-D", self.datadir, "-l", self.log_path,
                            "-o", self._server_options(), "-w", "-t", str(wait), "start"],
                           wait + 10)
        if result.returncode != 0:
            raise InstanceError("pg_ctl start exited %d: %s" % (
                result.returncode, result.stdout.decode("utf-8", "replace").strip()))
        # pg_ctl -w has seen the postmaster ready; make sure it answers on the TCP port too.
        while True:
            probe = subprocess.run([self._tool("pg_isready"), "-q", "-h", self.host,
                                    "-p", str(self.port), "-t", "2"], env=_clean_env(),
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, timeout=10)
            if probe.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise InstanceError("the server did not accept connections on port %d"
                                    % self.port)
            time.sleep(_POLL)

    def _halt(self, mode, pid):
        if mode == "kill":
            _kill_tree(pid, self.timeout)
            return
        result = self._run([self._tool("pg_ctl"), "-D", self.datadir, "-m", mode, "-w",
                            "-t", str(int(self.timeout)), "stop"], self.timeout + 10)
        if result.returncode != 0:
            raise InstanceError("pg_ctl stop -m %s exited %d: %s" % (
                mode, result.returncode, result.stdout.decode("utf-8", "replace").strip()))

    @property
    def pid(self):
        if self.base_dir is None:
            return None
        try:
            with open(os.path.join(self.datadir, "postmaster.pid")) as handle:
                pid = int(handle.readline().strip())
        except (OSError, ValueError):
            return None
        # A stale pid file (after a kill) may name a pid that is now someone else's.
        if _pid_alive(pid) and os.path.join(self.base_dir, "") in _cmdline(pid):
            return pid
        return None

    @property
    def url(self):
        return "postgresql://%s@%s:%d/%s" % (self.user, self.host, self.port, self.database)

    def _log_paths(self):
        return [self.log_path]


def _binary(*names):
    for name in names:
        path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
        if path:
            return path
    return None


class MariaDBInstance(_ServerInstance):
    """A MariaDB server of its own: mariadb-install-db into a temp folder, root without password,
    a `test` database (utf8mb4, like the shared server). The server is this process's child.

    server_args are extra mariadbd options, e.g. ["--max-connections=20"].
    """

    kind = "MariaDB"
    prefix = "sessionstate-mariadb-"
    user = "root"
    database = "test"
    # Small, so that a data folder takes ~25 MB and not ~110 MB; given to install-db and server.
    _common_args = ["--innodb-log-file-size=8M", "--innodb-buffer-pool-size=32M"]

    def __init__(self, **kwargs):
        self.mariadbd = _binary("mariadbd", "mysqld")
        self.install_db = _binary("mariadb-install-db", "mysql_install_db")
        self.admin = _binary("mariadb-admin", "mysqladmin")
        super().__init__(**kwargs)
        self.datadir = os.path.join(self.base_dir, "data")
        self.socket_path = os.path.join(self.base_dir, "mariadbd.sock")
        self.pid_path = os.path.join(self.base_dir, "mariadbd.pid")
        self.log_path = os.path.join(self.base_dir, "error.log")
        self.console_path = os.path.join(self.base_dir, "console.log")
        self._process = None
        self._user_args = ["--user=root"] if os.geteuid() == 0 else []

    @classmethod
    def unavailable_reason(cls):
        missing = [names[0] for names in (("mariadbd", "mysqld"),
                                          ("mariadb-install-db", "mysql_install_db"),
                                          ("mariadb-admin", "mysqladmin"))
                   if _binary(*names) is None]
        return "missing %s" % ", ".join(missing) if missing else None

    def _initialize(self):
        init_sql = os.path.join(self.base_dir, "init.sql")
        with open(init_sql, "w") as handle:
            handle.write("CREATE DATABASE `%s` CHARACTER SET utf8mb4 "
                         "COLLATE utf8mb4_general_ci;\n" % self.database)
        args = [self.install_db, "--no-defaults", "--datadir=" + self.datadir,
                "--auth-root-authentication-method=normal", "--skip-test-db",
                "--skip-name-resolve", "--extra-file=" + init_sql] \
            + self._user_args + self._common_args
        try:
            result = subprocess.run(args, cwd=self.base_dir, env=_clean_env(),
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, timeout=self.timeout,
                                    start_new_session=True)
        except subprocess.TimeoutExpired:
            raise InstanceError("mariadb-install-db took more than %.0f s"
                                % self.timeout) from None
        if result.returncode != 0:
            raise InstanceError("mariadb-install-db failed (exit %d):\n%s"
                                % (result.returncode, result.stdout.decode("utf-8", "replace")))

    def _launch(self, deadline):
        args = [self.mariadbd, "--no-defaults", "--datadir=" + self.datadir,
                "--port=%d" % self.port, "--bind-address=" + self.host,
                "--socket=" + self.socket_path, "--pid-file=" + self.pid_path,
                "--log-error=" + self.log_path, "--skip-name-resolve",
                "--character-set-server=utf8mb4", "--collation-server=utf8mb4_general_ci"] \
            + self._user_args + self._common_args + self.server_args
        with open(self.console_path, "ab") as console:
            # A session of its own: a Ctrl-C at the terminal is for pytest, which then cleans up.
            self._process = subprocess.Popen(args, cwd=self.base_dir, env=_clean_env(),
                                             stdin=subprocess.DEVNULL, stdout=console,
                                             stderr=subprocess.STDOUT, start_new_session=True)
        ping = [self.admin, "--no-defaults", "--protocol=TCP", "-h", self.host,
                "-P", str(self.port), "-u", self.user, "--connect-timeout=2", "ping"]
        while True:
            code = self._process.poll()
            if code is not None:
                raise InstanceError("mariadbd exited with %d" % code)
            try:
                probe = subprocess.run(ping, env=_clean_env(), stdin=subprocess.DEVNULL,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                       timeout=10)
                if probe.returncode == 0:
                    return
            except subprocess.TimeoutExpired:
                pass
            if time.monotonic() > deadline:
                raise InstanceError("the server did not accept connections on port %d"
                                    % self.port)
            time.sleep(_POLL)

    def _halt(self, mode, pid):
        process = self._process
        if mode == "fast":
            process.terminate()             # SIGTERM: mariadbd's normal shutdown
            try:
                process.wait(self.timeout)
            except subprocess.TimeoutExpired:
                raise InstanceError("mariadbd ignored SIGTERM for %.0f s" % self.timeout) from None
        else:
            process.kill()
            process.wait(self.timeout)

    def _force_stop(self):
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
            try:
                process.wait(self.timeout)
            except subprocess.TimeoutExpired:
                raise InstanceError("mariadbd %d survived SIGKILL" % process.pid) from None

    @property
    def pid(self):
        process = self._process
        if process is not None and process.poll() is None:
            return process.pid
        return None

    @property
    def url(self):
        return "mysql://%s@%s:%d/%s" % (self.user, self.host, self.port, self.database)

    def _log_paths(self):
        return [self.console_path, self.log_path]
