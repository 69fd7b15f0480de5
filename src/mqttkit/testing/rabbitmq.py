"""A throw-away RabbitMQ node with its MQTT plugin: :class:`RabbitMQServer` and its errors.

This module owns a RabbitMQ node private in everything (node name, ``$HOME`` and Erlang
cookie, its own ``epmd``, ports, configuration, environment, Mnesia), knowing when it is ready
(its log lines and a CONNACK to a CONNECT encoded by hand here), and stopping the node's whole
process group. The rest of the process life cycle is
:class:`~mqttkit.testing._process._ServerProcess`'s. It imports nothing of mqttkit but its own
package.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import IO, Final, NoReturn

from ._process import (
    _FALLBACK_PATHS,
    _LIVE,
    LOOPBACK,
    _find_binary,
    _port_accepts,
    _PortInUseError,
    _ServerProcess,
)

#: How to get RabbitMQ (with Erlang and its MQTT plugin), quoted by every "not found" error
#: about it.
RABBITMQ_INSTALL_HINT: Final = (
    "install it with `apt-get update && apt-get install -y rabbitmq-server`"
)


class RabbitMQServerError(RuntimeError):
    """RabbitMQ could not be started (or restarted); the message carries its log."""


class RabbitMQServerNotFoundError(RabbitMQServerError):
    """The ``rabbitmq-server`` script (or Erlang's ``epmd``, which comes with it) is missing."""


def find_rabbitmq_server() -> str:
    """Return the path of the ``rabbitmq-server`` script that runs a node in the foreground.

    Debian/Ubuntu's ``/usr/sbin/rabbitmq-server`` is a wrapper that switches to the ``rabbitmq``
    user (as root) or refuses to run (as anyone else); the script it wraps,
    ``/usr/lib/rabbitmq/bin/rabbitmq-server``, is the one used.

    Raises:
        RabbitMQServerNotFoundError: it is neither on ``$PATH`` nor in ``/usr/lib/rabbitmq/bin``.
    """
    for candidate in (shutil.which("rabbitmq-server"), *_FALLBACK_PATHS["rabbitmq-server"]):
        if (
            candidate
            and os.access(candidate, os.X_OK)
            and Path(candidate).resolve().name != "rabbitmq-script-wrapper"
        ):
            return candidate
    raise RabbitMQServerNotFoundError(f"rabbitmq-server not found: {RABBITMQ_INSTALL_HINT}")


def _find_epmd() -> str:
    path = _find_binary("epmd")
    if path is None:
        raise RabbitMQServerNotFoundError(
            f"epmd (Erlang, which RabbitMQ runs on) not found: {RABBITMQ_INSTALL_HINT}"
        )
    return path


#: The environment variables RabbitMQ gets from ours; every other one is left out, so that
#: neither the caller's ``RABBITMQ_*`` / ``ERL_*`` variables nor the unprefixed names RabbitMQ
#: also reads (``NODENAME``, ``CONFIG_FILE``, ``LOGS``...) reach the test server.
_RABBITMQ_PASSED_ENV: Final = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "TZ", "USER")

#: The line RabbitMQ logs once it has booted (all listeners open, all plugins started).
_RABBITMQ_READY: Final = "Server startup complete"

#: What RabbitMQ logs when one of its ports is taken: a listener's (AMQP, MQTT), the
#: distribution's.
_RABBITMQ_PORT_TAKEN: Final = ("eaddrinuse", "could not bind to distribution port")

#: A bare MQTT 3.1.1 CONNECT: clean session, keepalive 60 s, client id ``mqttkit-probe``.
_PROBE_CONNECT: Final = b"\x10\x19\x00\x04MQTT\x04\x02\x00\x3c\x00\x0dmqttkit-probe"


def _answers_connect(host: str, port: int, timeout: float) -> bool:
    """True when an MQTT 3.1.1 CONNECT to ``host:port`` gets a CONNACK (of any return code)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(_PROBE_CONNECT)
            if sock.recv(4)[:1] != b"\x20":
                return False
            sock.sendall(b"\xe0\x00")  # DISCONNECT
            return True
    except OSError:
        return False


class RabbitMQServer(_ServerProcess):
    """A real RabbitMQ node with its MQTT plugin on free loopback ports, private in everything.

    RabbitMQ 3.10's MQTT plugin is a third opinion, lenient where NATS is strict and different
    from both (observed with raw sockets, pinned by ``tests/brokers/test_rabbitmq_server.py``):

    - an MQTT 5 CONNECT is closed without a CONNACK; MQTT 3.1 (``MQIsdp``) and 3.1.1 are
      accepted, 3.1 with client ids longer than 23 characters too. Client ids have no length
      limit short of the packet's (65535 bytes is accepted, ``clean=False`` included); an
      empty one is accepted with a clean session and refused (return code 2) without;
    - a QoS 2 PUBLISH is answered with a PUBACK (it is handled as QoS 1), a QoS 2 subscription
      is granted as QoS 1, and messages are delivered at QoS 1 at most;
    - a retained message is delivered to a later subscription to its exact topic, never to one
      with a wildcard (``+`` or ``#``);
    - ``/`` and ``.`` both separate topic levels (topics become AMQP routing keys): a PUBLISH
      to ``a/x.y`` is delivered as ``a/x/y``, matches ``a/x/y`` and ``a/x.y`` but not ``a/+``;
    - the will is published when the connection is cut (FIN or RST without DISCONNECT), and not
      after a DISCONNECT;
    - a kept session (``clean=False``) is a durable queue: the CONNACK says session present,
      QoS 1 messages published while it is offline are delivered on reconnection (one left
      unacknowledged comes again, with DUP set); sessions, their queued messages and retained
      messages survive a restart.

    Everything is its own: the node name (``mqttkit-<random>@localhost``), ``$HOME`` (so its
    own Erlang cookie), an ``epmd`` of its own on a private port (started here, as a child with
    a PID of ours, before the node), the AMQP, Erlang distribution and MQTT ports (all bound to
    127.0.0.1), the generated ``rabbitmq.conf``, an empty ``rabbitmq-env.conf`` in place of
    ``/etc/rabbitmq/rabbitmq-env.conf``, the enabled-plugins file (``[rabbitmq_mqtt].``), the
    Mnesia database and the log, all in a private temporary directory that :meth:`close` (or
    leaving the ``with`` block) removes. The node gets a minimal environment (``PATH``, locale)
    plus its own variables, so neither a system-wide RabbitMQ (its ports 5672, 25672, 4369, its
    ``/var/lib/rabbitmq``) nor the caller's ``RABBITMQ_*`` variables come into play.

    Ports are chosen on the first :meth:`start` and kept by :meth:`restart`, and so is the
    Mnesia directory: kept sessions (``clean=False``, a durable queue each) and retained
    messages survive it. A first start takes about 10 s (the MQTT plugin waits about 5 s for
    cluster peers before it elects itself leader of its client-id registry), a restart (stop
    and start) about 4 s: share one server where you can (the ``rabbitmq_server`` fixture).

    Args:
        debug: log at debug level (every MQTT connection's details) instead of info.
        extra_config: appended verbatim to the generated ``rabbitmq.conf`` (new-style
            ``key = value`` lines, for example ``"mqtt.prefetch = 1"``).
        executable: the ``rabbitmq-server`` script; found on ``$PATH`` or in
            ``/usr/lib/rabbitmq/bin`` by default (see :func:`find_rabbitmq_server`).
        epmd_executable: Erlang's ``epmd``; found on ``$PATH`` by default.
        startup_timeout: seconds to wait for the node to answer an MQTT CONNECT.
    """

    _what = "rabbitmq-server"
    _dir_prefix = "mqttkit-rabbitmq-"
    _error = RabbitMQServerError

    def __init__(
        self,
        *,
        debug: bool = False,
        extra_config: str = "",
        executable: str | None = None,
        epmd_executable: str | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        self.debug = debug
        self.extra_config = extra_config
        self.executable = executable
        self.epmd_executable = epmd_executable
        self.startup_timeout = startup_timeout
        #: The Erlang node name, unique to this server (its Mnesia directory is named after it).
        self.node_name = f"mqttkit-{secrets.token_hex(4)}@localhost"

        self._dir: Path | None = None
        self._ports: dict[str, int] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._output: IO[bytes] | None = None
        self._epmd: subprocess.Popen[bytes] | None = None
        self._epmd_path = ""
        self._final_log = ""

    # -- properties ------------------------------------------------------------------------------

    @property
    def host(self) -> str:
        """The address every listener is bound to: ``127.0.0.1``."""
        return LOOPBACK

    def _port(self, name: str) -> int:
        try:
            return self._ports[name]
        except KeyError:
            raise RuntimeError("the RabbitMQ server has not been started yet") from None

    @property
    def mqtt_port(self) -> int:
        """The MQTT (TCP) port of the ``rabbitmq_mqtt`` plugin."""
        return self._port("mqtt")

    @property
    def port(self) -> int:
        """The same as :attr:`mqtt_port`, so code written for a Mosquitto broker works."""
        return self.mqtt_port

    @property
    def amqp_port(self) -> int:
        """The AMQP 0-9-1 port (user ``guest``, password ``guest``, virtual host ``/``)."""
        return self._port("amqp")

    @property
    def dist_port(self) -> int:
        """The Erlang distribution port (on 127.0.0.1, registered with :attr:`epmd_port`)."""
        return self._port("dist")

    @property
    def epmd_port(self) -> int:
        """The port of this server's own ``epmd`` (Erlang's port mapper)."""
        return self._port("epmd")

    @property
    def url(self) -> str:
        """``mqtt://127.0.0.1:<mqtt_port>``."""
        return f"mqtt://{LOOPBACK}:{self.mqtt_port}"

    @property
    def directory(self) -> Path:
        """The private directory holding the configuration, log, ``$HOME`` and Mnesia."""
        return self._workdir()

    @property
    def config_path(self) -> Path:
        """The generated ``rabbitmq.conf``."""
        return self._workdir() / "rabbitmq.conf"

    @property
    def log_path(self) -> Path:
        """The node's log (RabbitMQ logs to its standard output, written here with stderr)."""
        return self._workdir() / "rabbitmq.log"

    @property
    def mnesia_dir(self) -> Path:
        """The node's database directory (queues, kept sessions, retained messages)."""
        return self._workdir() / "mnesia" / self.node_name

    @property
    def pid(self) -> int | None:
        """The process id of the ``rabbitmq-server`` script while it runs, else None.

        The Erlang node is its child, in the process group this PID leads.
        """
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def epmd_pid(self) -> int | None:
        """The process id of this server's own ``epmd`` while it runs, else None."""
        epmd = self._epmd
        return epmd.pid if epmd is not None and epmd.poll() is None else None

    @property
    def running(self) -> bool:
        """True while the ``rabbitmq-server`` process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def log_text(self) -> str:
        """Return the node's log so far, also after :meth:`close`."""
        if self._dir is None:
            return self._final_log
        with contextlib.suppress(FileNotFoundError):
            return (self._dir / "rabbitmq.log").read_text(encoding="utf-8", errors="replace")
        return ""

    # -- life cycle ------------------------------------------------------------------------------

    def start(self) -> RabbitMQServer:
        """Start ``epmd`` and the node, and wait until the node answers an MQTT CONNECT.

        Returns:
            self, so that ``server = RabbitMQServer().start()`` reads well.

        Raises:
            RabbitMQServerNotFoundError: ``rabbitmq-server`` or ``epmd`` is missing.
            RabbitMQServerError: the node exited or did not answer in time; the message has its
                log and configuration.
        """
        if self.running:
            raise RuntimeError("the RabbitMQ server is already running")
        executable = self.executable or find_rabbitmq_server()
        if not os.access(executable, os.X_OK):
            raise RabbitMQServerNotFoundError(
                f"rabbitmq-server not found at {executable}: {RABBITMQ_INSTALL_HINT}"
            )
        self._epmd_path = self.epmd_executable or _find_epmd()
        self._workdir(create=True)
        self._start_on_ports(executable)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the node by its PID: SIGTERM (a graceful shutdown, about 2 s), wait up to
        ``timeout`` seconds, then SIGKILL to its whole process group; then stop its ``epmd``.

        The temporary directory stays (so :meth:`restart` and :meth:`log_text` work);
        :meth:`close` removes it. Does nothing when the server is not running.
        """
        proc = self._proc
        if proc is not None:
            if proc.returncode is None:
                # The script passes SIGTERM on to the node and waits for it to finish.
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                if not _exits_within(proc, timeout):
                    _kill_group(proc)
            _kill_group(proc)  # anything of the node's left behind (none when the script ended)
            proc.wait(timeout=10)
            self._proc = None
        self._stop_epmd(timeout)
        self._close_output()
        _LIVE.discard(self)

    def kill(self) -> None:
        """Kill the node with SIGKILL (its whole process group: a crash, no shutdown), and
        its ``epmd``. Mnesia recovers on the next start."""
        proc = self._proc
        if proc is not None:
            _kill_group(proc)
            proc.wait(timeout=10)
            self._proc = None
        self._stop_epmd(timeout=0)
        self._close_output()
        _LIVE.discard(self)

    def restart(self, timeout: float = 30.0) -> None:
        """Stop (gracefully) and start again on the same ports, with the same node name and
        Mnesia directory: kept sessions and retained messages survive.

        Raises:
            RabbitMQServerError: it did not come back (a port taken meanwhile...).
        """
        self.stop(timeout)
        self.start()

    def __repr__(self) -> str:
        state = f"mqtt_port={self._ports.get('mqtt')}" if self._ports else "not started"
        return f"<RabbitMQServer {self.node_name} {state} running={self.running}>"

    # -- internals -------------------------------------------------------------------------------

    @staticmethod
    def _choose_ports() -> dict[str, int]:
        names = ("epmd", "amqp", "dist", "mqtt")
        # Hold every socket until all are chosen, so the ports differ from each other.
        socks = []
        try:
            for _ in names:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(sock)
                sock.bind((LOOPBACK, 0))
            return {name: s.getsockname()[1] for name, s in zip(names, socks, strict=True)}
        finally:
            for sock in socks:
                sock.close()

    def _config_text(self) -> str:
        level = "debug" if self.debug else "info"
        lines = [
            "# Generated by mqttkit.testing for one test server.",
            f"listeners.tcp.1 = {LOOPBACK}:{self._ports['amqp']}",
            f"mqtt.listeners.tcp.1 = {LOOPBACK}:{self._ports['mqtt']}",
            "mqtt.allow_anonymous = true",
            "mqtt.default_user = guest",
            "mqtt.default_pass = guest",
            "mqtt.vhost = /",
            # guest may log in from anywhere (only loopback listeners exist anyway).
            "loopback_users = none",
            # Everything to standard output, which goes to log_path: start() waits for lines
            # logged at info level.
            "log.file = false",
            "log.console = true",
            f"log.console.level = {level}",
        ]
        if self.extra_config:
            lines += ["", "# extra_config", self.extra_config]
        return "\n".join(lines) + "\n"

    def _environment(self) -> dict[str, str]:
        workdir = self._workdir()
        env = {name: os.environ[name] for name in _RABBITMQ_PASSED_ENV if name in os.environ}
        env.setdefault("PATH", os.defpath)
        env.update(
            {
                "HOME": str(workdir / "home"),  # its own ~/.erlang.cookie
                "ERL_EPMD_ADDRESS": LOOPBACK,
                "ERL_EPMD_PORT": str(self._ports["epmd"]),
                "ERL_CRASH_DUMP": str(workdir / "erl_crash.dump"),
                # Read instead of /etc/rabbitmq/rabbitmq-env.conf (which could set anything).
                "RABBITMQ_CONF_ENV_FILE": str(workdir / "rabbitmq-env.conf"),
                "RABBITMQ_NODENAME": self.node_name,
                "RABBITMQ_USE_LONGNAME": "false",
                "RABBITMQ_DIST_PORT": str(self._ports["dist"]),
                "RABBITMQ_CONFIG_FILE": str(self.config_path),
                "RABBITMQ_CONFIG_FILES": str(workdir / "conf.d"),
                "RABBITMQ_ADVANCED_CONFIG_FILE": str(workdir / "advanced.config"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(workdir / "enabled_plugins"),
                "RABBITMQ_PLUGINS_EXPAND_DIR": str(workdir / "plugins-expand"),
                "RABBITMQ_MNESIA_BASE": str(workdir / "mnesia"),
                "RABBITMQ_LOG_BASE": str(workdir / "log"),
                "RABBITMQ_LOGS": "-",
                "RABBITMQ_PID_FILE": str(workdir / "rabbitmq.pid"),
                # Our own epmd is already running: the node must not start another one (it
                # would outlive the node). The distribution listens on loopback only.
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": (
                    "-start_epmd false -kernel inet_dist_use_interface {127,0,0,1}"
                ),
            }
        )
        return env

    def _launch(self, executable: str) -> None:
        workdir = self._workdir()
        for name in ("home", "mnesia", "log", "plugins-expand"):
            (workdir / name).mkdir(exist_ok=True)
        (workdir / "rabbitmq-env.conf").write_text(
            "# Generated by mqttkit.testing: empty, read instead of the system-wide one.\n",
            encoding="utf-8",
        )
        (workdir / "enabled_plugins").write_text("[rabbitmq_mqtt].\n", encoding="utf-8")
        log_path = self.log_path
        log_path.touch()  # a restart appends: the log tells the whole story
        offset = log_path.stat().st_size
        deadline = time.monotonic() + self.startup_timeout
        self._start_epmd(deadline)
        self._output = log_path.open("ab")
        try:
            proc = subprocess.Popen(
                [executable],
                env=self._environment(),
                stdin=subprocess.DEVNULL,
                stdout=self._output,
                stderr=self._output,
                cwd=workdir,
                # Its own session and process group (the group stop() and kill() can sweep);
                # a Ctrl-C in the terminal reaches pytest, which then stops us.
                start_new_session=True,
            )
        except BaseException:
            self.kill()  # its epmd
            raise
        self._proc = proc
        _LIVE.add(self)
        listening = f"started MQTT TCP listener on {LOOPBACK}:{self.mqtt_port}"
        delay = 0.05
        # Bounded poll: at most startup_timeout seconds. Ready means: the log says the MQTT
        # listener is open (on our port: another process's listener there would answer the
        # probe while the node is still booting) and the boot is complete, and an MQTT CONNECT
        # gets its CONNACK.
        for _ in range(100_000):
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                pass
            else:
                new_log = self._log_since(offset)
                self.kill()  # its epmd
                if any(sign in new_log for sign in _RABBITMQ_PORT_TAKEN):
                    raise _PortInUseError
                self._raise_startup_error(
                    f"rabbitmq-server exited with status {proc.returncode} during startup",
                    new_log,
                )
            new_log = self._log_since(offset)
            if (
                listening in new_log
                and _RABBITMQ_READY in new_log
                and _answers_connect(LOOPBACK, self.mqtt_port, timeout=2.0)
            ):
                if self.epmd_pid is None:
                    # Our epmd found its port taken after all (by another epmd, which the node
                    # then registered with): start again on other ports.
                    self.kill()
                    raise _PortInUseError
                return
            if time.monotonic() > deadline:
                break
            delay = min(delay * 2, 0.2)
        new_log = self._log_since(offset)
        self.kill()
        self._raise_startup_error(
            f"rabbitmq-server did not answer an MQTT CONNECT within {self.startup_timeout} s",
            new_log,
        )

    def _start_epmd(self, deadline: float) -> None:
        """Start this server's own epmd in the foreground (a child we own by its PID) and wait
        until it listens."""
        port = self._ports["epmd"]
        epmd_log = self._workdir() / "epmd.log"
        with epmd_log.open("ab") as output:
            offset = output.tell()
            epmd = subprocess.Popen(
                # -d: a line when it starts (and when it finds its port taken).
                [self._epmd_path, "-port", str(port), "-address", LOOPBACK, "-d"],
                env={"PATH": os.environ.get("PATH", os.defpath)},
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                cwd=self._workdir(),
                start_new_session=True,
            )
        self._epmd = epmd
        _LIVE.add(self)
        delay = 0.005
        for _ in range(100_000):
            try:
                epmd.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                pass
            else:
                self._epmd = None
                with epmd_log.open("rb") as f:
                    f.seek(offset)
                    output_text = f.read().decode(errors="replace").strip()
                if "already" in output_text or _port_accepts(LOOPBACK, port):
                    raise _PortInUseError
                raise RabbitMQServerError(
                    f"epmd exited with status {epmd.returncode} on port {port}:\n{output_text}"
                )
            if _port_accepts(LOOPBACK, port):
                return
            if time.monotonic() > deadline:
                break
            delay = min(delay * 2, 0.05)
        self._stop_epmd(timeout=0)
        raise RabbitMQServerError(f"epmd did not listen on port {port} in time")

    def _stop_epmd(self, timeout: float) -> None:
        epmd = self._epmd
        if epmd is None:
            return
        if epmd.poll() is None:
            if timeout > 0:
                epmd.terminate()
                try:
                    epmd.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    epmd.kill()
            else:
                epmd.kill()
        epmd.wait(timeout=10)
        self._epmd = None

    def _log_since(self, offset: int) -> str:
        """What this run wrote to the log (earlier runs' lines excluded)."""
        with contextlib.suppress(FileNotFoundError), self.log_path.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
        return ""

    def _raise_startup_error(self, message: str, log: str) -> NoReturn:
        config = self.config_path.read_text(encoding="utf-8")
        raise RabbitMQServerError(
            f"{message}\n--- rabbitmq-server output ---\n{log.strip()}\n"
            f"--- {self.config_path} ---\n{config}"
        )


def _exits_within(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for ``proc`` to exit, without reaping it: its PID, and
    so its process group's id, stays reserved for :func:`_kill_group`."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while proc.returncode is None:
        if os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
    return True


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL every process in the group ``proc`` leads (started with a session of its own)."""
    if proc.returncode is not None:
        return  # reaped: its PID (the group's id) may belong to someone else by now
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
