"""How long a process with open blocking clients lives (mqttkit.sync.lifetime), tested as a user
meets it, in a subprocess: Node semantics (the seed example keeps running after its main
thread ends), one Ctrl-C ends it (its clients closed, the usual KeyboardInterrupt status, in
under 2 s), an unhandled exception ends it, and a pytest run whose test forgets ``close()``
ends after its summary."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mqttkit.testing import MosquittoBroker

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"

pytestmark = pytest.mark.skipif(os.name != "posix", reason="sends SIGINT to a subprocess")

#: What an unhandled KeyboardInterrupt ends a Python process with (killed by SIGINT: a shell
#: shows 130).
INTERRUPTED = -signal.SIGINT

#: The seed example (node.lua's ``mqtt`` README): connect, register listeners, nothing else;
#: the main thread ends at once. ``end`` says the client was closed.
SEED = """\
import sys
import mqttkit

client = mqttkit.connect(sys.argv[1], client_id=sys.argv[2])

@client.on("connect")
def on_connect(connack):
    print("connected", flush=True)

@client.on("end")
def on_end():
    print("closed", flush=True)
{tail}
"""


class Script:
    """A Python script run in a subprocess; its stdout read line by line (bounded waits)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: queue.Queue[str] = queue.Queue()
        self.stdout: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.stdout.append(line)
            self.lines.put(line)

    def wait_for_line(self, text: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no {text!r} line; stdout so far: {self.stdout}"
            try:
                if self.lines.get(timeout=left).strip() == text:
                    return
            except queue.Empty:
                continue

    def interrupt(self) -> tuple[int, float]:
        """Send one SIGINT; the exit status and how long the process took to exit."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGINT)
        try:
            status = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pytest.fail("one SIGINT did not end the process within 5 s")
        self._reader.join(5)
        return status, time.monotonic() - started

    def stderr(self) -> str:
        assert self.proc.stderr is not None
        return self.proc.stderr.read()


@contextmanager
def script(tmp_path: Path, source: str, *args: str) -> Iterator[Script]:
    path = tmp_path / "script.py"
    path.write_text(source, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.Popen(
        [sys.executable, str(path), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        yield Script(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def disconnected(broker: MosquittoBroker, client_id: str, timeout: float = 5.0) -> bool:
    """Whether the broker saw ``client_id`` DISCONNECT (a graceful close, not a dropped
    socket: that would publish its Will)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if f"Client {client_id} disconnected." in broker.log_text():
            return True
        time.sleep(0.02)
    return False


def test_the_seed_example_keeps_running_and_one_ctrl_c_ends_it(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    client_id = "lifetime-seed"
    with script(tmp_path, SEED.format(tail=""), mosquitto.url, client_id) as run:
        run.wait_for_line("connected")
        # Node semantics: the main thread has ended, the open client keeps the process alive.
        with pytest.raises(subprocess.TimeoutExpired):
            run.proc.wait(timeout=0.5)
        status, took = run.interrupt()
        stderr = run.stderr()
        assert status == INTERRUPTED, stderr
        assert took < 2.0
        assert "closed\n" in run.stdout  # the client was closed: its end event ran
        assert "Exception ignored" not in stderr
        assert "Traceback" not in stderr
    assert disconnected(mosquitto, client_id), mosquitto.log_text()


def test_one_ctrl_c_ends_a_script_blocked_in_its_main_thread(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    client_id = "lifetime-sleeper"
    source = SEED.format(tail="import time\ntime.sleep(60)\n")
    with script(tmp_path, source, mosquitto.url, client_id) as run:
        run.wait_for_line("connected")
        status, took = run.interrupt()
        stderr = run.stderr()
        assert status == INTERRUPTED, stderr
        assert took < 2.0
        assert "closed\n" in run.stdout
        # The usual traceback of the interrupted main thread, and nothing from the shutdown.
        assert stderr.rstrip().endswith("KeyboardInterrupt"), stderr
        assert "Exception ignored" not in stderr
    assert disconnected(mosquitto, client_id), mosquitto.log_text()


def test_an_unhandled_exception_ends_the_script_and_closes_its_clients(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    client_id = "lifetime-raises"
    source = SEED.format(
        tail="import threading\n"
        "connected = threading.Event()\n"
        "client.on('connect', lambda: connected.set())\n"
        "connected.wait(10)\n"
        "raise RuntimeError('boom')\n"
    )
    with script(tmp_path, source, mosquitto.url, client_id) as run:
        try:
            status = run.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pytest.fail("the script did not end after its unhandled exception")
        run._reader.join(5)
        stderr = run.stderr()
        assert status == 1, stderr
        assert "RuntimeError: boom" in stderr
        assert "closed\n" in run.stdout
    assert disconnected(mosquitto, client_id), mosquitto.log_text()


def test_a_test_that_forgets_close_does_not_hang_pytest(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\naddopts = -p no:cacheprovider\nfilterwarnings = error\n", encoding="utf-8"
    )
    (tmp_path / "test_forgets.py").write_text(
        textwrap.dedent(
            f"""\
            import threading
            import mqttkit

            def test_connects_and_forgets_close():
                client = mqttkit.connect({mosquitto.url!r}, client_id="lifetime-forgotten")
                connected = threading.Event()
                client.on("connect", lambda: connected.set())
                assert connected.wait(10)
            """
        ),
        encoding="utf-8",
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(tmp_path)])}
    started = time.monotonic()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"pytest did not exit after its summary:\n{exc.stdout!r}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
    assert "mqttkit: clients left open" in result.stdout
    assert "lifetime-forgotten" in result.stdout
    assert time.monotonic() - started < 30
    assert disconnected(mosquitto, "lifetime-forgotten"), mosquitto.log_text()
