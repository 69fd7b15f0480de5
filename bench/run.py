"""mqttkit's benchmark: every workload, every client, side by side, against a private Mosquitto.

    python bench/run.py                 # the full run: 3 repeats, medians, ratios (minutes)
    python bench/run.py --quick         # small N: checks every workload completes (CI)
    python bench/run.py --workloads pub0,rtt1 --clients mqttkit-sync,paho
    python bench/run.py --workloads durable --clients mqttkit-sync,mqttkit-aio   # the dur1-*
    python bench/run.py --transport ws --sub-transport tcp --workloads big     # publisher over ws://

Each client library runs in its own processes (a subscriber process and a publisher process
for the throughput workloads), started by this script, one run at a time. The table shows the
median of the repeats and the ratio to paho-mqtt and to gmqtt measured in the same run. A run in
which the subscriber missed messages is shown as ``LOST n``, never as a rate. Raw results go to
``bench/results/<time>.json``.

``pub1cb`` / ``pub2cb``: ``pub1`` / ``pub2`` with the "callback and window" shape: at most 100
messages in flight, each publish with a completion callback that frees a slot, until every
callback has fired (role ``pubcb``; gmqtt has no per-message callback: n/a). ``--clients
mqttjs`` adds MQTT.js 5 (bench/mqttjs, under node; ``npm ci`` there when node_modules is
missing).

Durable publishing (``--workloads durable`` selects all six): ``pub1``'s shape (20,000 x 64 B
at QoS 1, from the first publish until every message is acknowledged and received; the same
subscriber), published with ``clean=False``, a fixed client id and a given outgoing (and
incoming) store, by 1 or by 8 threads of one blocking client; each thread publishes its share
in a tight loop of ``client.publish(topic, payload, {"qos": 1})``, then the process waits with
``client.flush()``:

    dur1-mem         1 thread, the default MemoryStore: the reference for the two below
    dur1-batched     1 thread, SQLiteStore(durability="batched")
    dur1-full        1 thread, SQLiteStore(durability="full")
    dur1-mem-t8      the same three with 8 publishing threads
    dur1-batched-t8
    dur1-full-t8

Clients: the blocking front (``mqttkit-sync``, ``mqttkit-inline``), and ``mqttkit-aio``
for the 1-publisher rows; the other clients have no store and show ``n/a`` (not run). Each run
gets a fresh store file (``SQLiteStore.pair``) in a new temporary directory under
``--store-dir`` (default: the system's), removed after the run; "full" fsyncs, so its figures
are those of that directory's disk. A further table shows each durable row as a ratio to the
memory-store row of the same client and thread count in the same run, with the issue's targets:
"batched" >= 0.5x the memory store, "full" with 8 threads >= 10,000 msg/s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))

from mqttkit.testing import MosquittoBroker  # noqa: E402

CLIENTS = ["mqttkit-sync", "mqttkit-aio", "paho", "gmqtt"]


@dataclass(frozen=True)
class Workload:
    name: str
    kind: str  # "flow" (sub + pub processes), "rtt", "fanin", "conn"
    n: int
    qos: int = 0
    size: int = 64
    clients: int = 1
    quick_n: int = 100
    quick_clients: int = 1
    timeout: float = 300.0
    store: str = ""  # "dur": "memory" (the default store), "batched" or "full" (SQLiteStore)
    threads: int = 1  # "dur": publishing threads in the one client
    only: tuple[str, ...] = ()  # the clients that can run it (empty: all); others show n/a
    pub_role: str = "pub"  # "flow": the publisher's role ("pubcb": callbacks and a window)


# The clients that take an outgoing store; the asyncio front publishes from one task only.
STORE_CLIENTS = ("mqttkit-sync", "mqttkit-inline", "mqttkit-aio")
BLOCKING_CLIENTS = ("mqttkit-sync", "mqttkit-inline")
# The clients with a per-message completion callback (pub1cb, pub2cb); gmqtt has none.
CALLBACK_CLIENTS = (
    "mqttkit-sync",
    "mqttkit-inline",
    "mqttkit-aio",
    "mqttkit-aio-uvloop",
    "paho",
    "mqttjs",
)

WORKLOADS = [
    Workload("pub0", "flow", 100_000, qos=0, quick_n=1_000),
    Workload("pub1", "flow", 20_000, qos=1, quick_n=500),
    Workload("pub2", "flow", 10_000, qos=2, quick_n=300),
    Workload("rtt1", "rtt", 2_000, qos=1, quick_n=50),
    # The "callback and window" shape: at most 100 in flight, each publish's callback frees a
    # slot; done when every callback has fired (the subscriber is pub1's / pub2's).
    Workload("pub1cb", "flow", 20_000, qos=1, quick_n=500, pub_role="pubcb", only=CALLBACK_CLIENTS),
    Workload("pub2cb", "flow", 10_000, qos=2, quick_n=300, pub_role="pubcb", only=CALLBACK_CLIENTS),
    Workload("big", "flow", 200, qos=1, size=1_000_000, quick_n=5),
    Workload("fanin", "fanin", 20_000, qos=1, clients=100, quick_n=200, quick_clients=10),
    Workload("conn", "conn", 10_000, quick_n=200),
    # Durable publishing ("dur": a "flow" whose publisher has the given store and threads).
    *(
        Workload(
            f"dur1-{label}{'-t8' if threads > 1 else ''}",
            "dur",
            20_000,
            qos=1,
            quick_n=200,
            store=store,
            threads=threads,
            only=STORE_CLIENTS if threads == 1 else BLOCKING_CLIENTS,
        )
        for threads in (1, 8)
        for label, store in (("mem", "memory"), ("batched", "batched"), ("full", "full"))
    ),
]

# Names --workloads accepts for a group of workloads.
GROUPS = {"durable": [w.name for w in WORKLOADS if w.kind == "dur"]}


MQTTJS = HERE / "mqttjs"
#: uvloop for ``--clients mqttkit-aio-uvloop``, installed here (pip --target), on the PYTHONPATH of
#: that client's processes only: in the environment the tests use, pproxy would pick it up and
#: fail to start.
UVLOOP = HERE / ".uvloop"


def spawn(args: list[str]) -> subprocess.Popen[str]:
    """One role of one client (``args``: role, client, options) in a new process: clients.py,
    or bench/mqttjs/client.js under node for MQTT.js."""
    if args[1] == "mqttjs":
        command = ["node", str(MQTTJS / "client.js"), *args]
    else:
        command = [sys.executable, str(HERE / "clients.py"), *args]
    return subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": _pythonpath(args[1])},
    )


def _pythonpath(client: str) -> str:
    paths = [str(ROOT / "src")]
    if client == "mqttkit-aio-uvloop":
        paths.append(str(UVLOOP))
    return os.pathsep.join(paths)


def ensure_uvloop() -> None:
    """uvloop for ``--clients mqttkit-aio-uvloop``, in bench/.uvloop (once)."""
    if (UVLOOP / "uvloop").is_dir():
        return
    print("bench/.uvloop: pip install uvloop (once)", flush=True)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--target", str(UVLOOP), "uvloop"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"pip install uvloop failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


def last_json(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        return {"error": f"timed out after {timeout} s", "stderr": err[-2000:]}
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": f"exit {proc.returncode}", "stderr": err[-2000:]}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def wait_ready(proc: subprocess.Popen[str], timeout: float) -> bool:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            return False
        if line.strip() == "READY":
            return True
    return False


def proc_cpu(pid: int | None) -> float | None:
    """CPU seconds (user + system) a process has used so far, from /proc; None if unknown."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_one(
    w: Workload,
    client: str,
    url: str,
    topic: str,
    quick: bool,
    store_dir: str | None = None,
    sub_url: str | None = None,
) -> dict[str, Any]:
    if w.only and client not in w.only:
        return {"unsupported": True}  # not started: no process, no time spent
    n = w.quick_n if quick else w.n
    common = [
        "--url",
        url,
        "--topic",
        topic,
        "--n",
        str(n),
        "--qos",
        str(w.qos),
        "--size",
        str(w.size),
        "--timeout",
        str(w.timeout),
    ]
    if w.kind == "conn":
        return last_json(spawn(["conn", client, *common]), w.timeout + 30)
    if w.kind == "rtt":
        return last_json(spawn(["rtt", client, *common]), w.timeout + 30)
    if w.kind == "dur":
        # A fresh store file per run, in a directory removed afterwards whatever happened.
        with tempfile.TemporaryDirectory(prefix="mqttkit-bench-", dir=store_dir) as tmp:
            pub_args = [
                "durpub",
                client,
                *common,
                "--store",
                w.store,
                "--threads",
                str(w.threads),
                "--client-id",
                topic.replace("/", "-"),  # fixed for this run, unique in the broker
                "--store-path",
                os.path.join(tmp, "store.db"),
            ]
            return run_flow(w, client, _with_url(common, sub_url), pub_args, n)
    if w.kind == "fanin":
        clients = w.quick_clients if quick else w.clients
        fanin = ["fanin", client, *common, "--clients", str(clients)]
        return run_flow(w, client, _with_url(common, sub_url), fanin, n)
    pub_args = [w.pub_role, client, *common]
    return run_flow(w, client, _with_url(common, sub_url), pub_args, n)


def ensure_mqttjs() -> None:
    """MQTT.js for ``--clients mqttjs``: ``npm ci`` in bench/mqttjs (its package-lock.json) when
    its node_modules is missing. Exits with what to install when node or npm is missing."""
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        raise SystemExit(
            f"--clients mqttjs needs Node.js and npm ({' and '.join(missing)} not found): "
            "apt-get install nodejs npm"
        )
    if (MQTTJS / "node_modules" / "mqtt").is_dir():
        return
    print("bench/mqttjs: npm ci (MQTT.js, once)", flush=True)
    done = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund"],
        cwd=MQTTJS,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"npm ci in {MQTTJS} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


def _with_url(common: list[str], url: str | None) -> list[str]:
    """``common`` (the arguments both processes get) with the subscriber's own ``--url``."""
    if url is None:
        return common
    out = list(common)
    out[out.index("--url") + 1] = url
    return out


def run_flow(
    w: Workload, client: str, common: list[str], pub_args: list[str], n: int
) -> dict[str, Any]:
    """A subscriber process, then a publisher process with ``pub_args``: both results."""
    sub = spawn(["sub", client, *common])
    if not wait_ready(sub, 30):
        sub.kill()
        return {"error": "subscriber not ready", "stderr": (sub.communicate()[1] or "")[-2000:]}
    pub = spawn(pub_args)
    started = time.monotonic()
    pub_result = last_json(pub, w.timeout + 30)
    # The subscriber gets a grace period after the publisher is done, then is told to stop and
    # report: a run that lost messages costs seconds, not the whole timeout.
    grace = max(5.0, 2 * (time.monotonic() - started))
    try:
        sub.wait(grace)
    except subprocess.TimeoutExpired:
        assert sub.stdin is not None
        with contextlib.suppress(OSError):
            sub.stdin.write("STOP\n")
            sub.stdin.flush()
    sub_result = last_json(sub, 60)
    return {"pub": pub_result, "sub": sub_result, "n": n}


def metrics(w: Workload, r: dict[str, Any]) -> dict[str, Any]:
    """Reduce one raw run to the figures the table shows."""
    if "unsupported" in r or "unsupported" in r.get("pub", {}):
        return {"unsupported": True}
    for part in (r, r.get("pub", {}), r.get("sub", {})):
        if "error" in part:
            return {"error": part["error"]}
    if w.kind == "rtt":
        samples = sorted(r["samples"])
        if not samples:
            return {"error": "no round trip completed"}
        return {
            "p50_ms": samples[len(samples) // 2] * 1000,
            "p99_ms": samples[min(len(samples) - 1, int(len(samples) * 0.99))] * 1000,
            "cpu_per_10k": r["cpu"] / len(samples) * 10_000,
            "peak_rss_mb": r["peak_rss_kb"] / 1024,
        }
    if w.kind == "conn":
        return {
            "seconds": r["end"] - r["start"],
            "connected": r["connected"],
            "rss_per_conn_kb": r["rss_per_conn_kb"],
            "peak_rss_mb": r["peak_rss_kb"] / 1024,
        }
    n = r["n"]
    pub, sub = r["pub"], r["sub"]
    lost = n - sub["distinct"]
    elapsed = max(sub["last"], pub["end"]) - pub["start"]
    out = {
        "lost": lost,
        "duplicates": sub["duplicates"],
        "cpu_per_10k": (pub["cpu"] + sub["cpu"]) / n * 10_000,
        "pub_cpu_per_10k": pub["cpu"] / n * 10_000,
        "sub_cpu_per_10k": sub["cpu"] / n * 10_000,
        "peak_rss_mb": max(pub["peak_rss_kb"], sub["peak_rss_kb"]) / 1024,
    }
    if pub.get("store_left"):
        # Records the durable outgoing store still held once every flow had completed.
        out["store_left"] = pub["store_left"]
    if "broker_cpu" in r:
        out["broker_cpu_per_10k"] = r["broker_cpu"] / n * 10_000
        if elapsed > 0:
            # The share of one core the broker used while the messages flowed: near 1.0, the
            # broker, not the client, set the pace.
            out["broker_busy"] = r["broker_cpu"] / elapsed
    if lost == 0 and elapsed > 0:
        out["msgs_per_s"] = n / elapsed
        out["mb_per_s"] = n * w.size / elapsed / 1e6
    return out


# The peers each result is compared with (a column each: vs paho, vs gmqtt, vs MQTT.js).
PEERS = ("paho", "gmqtt", "mqttjs")

PRIMARY = {
    "flow": "msgs_per_s",
    "fanin": "msgs_per_s",
    "dur": "msgs_per_s",
    "rtt": "p50_ms",
    "conn": "seconds",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small N: checks completion only")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--workloads", default=",".join(w.name for w in WORKLOADS))
    parser.add_argument("--clients", default=",".join(CLIENTS))
    parser.add_argument("--out", default=None, help="JSON file for the raw results")
    parser.add_argument("--render", default=None, help="print the tables of a raw results file")
    parser.add_argument(
        "--store-dir", default=None, help="where the dur1-* store files go (default: temp dir)"
    )
    parser.add_argument(
        "--transport",
        choices=("tcp", "ws"),
        default="tcp",
        help="ws: through Mosquitto's WebSocket listener (mqttkit's clients only; needs wsproto)",
    )
    parser.add_argument(
        "--sub-transport",
        choices=("tcp", "ws"),
        default=None,
        help="the subscriber's transport in the flow workloads (default: --transport); "
        "Mosquitto 2.0's WebSocket listener stalls sending large messages (paho's "
        "subscriber too), so 'big' over ws measures the publisher: --sub-transport tcp",
    )
    args = parser.parse_args()
    if args.render:
        return render_file(Path(args.render))
    repeats = args.repeats or (1 if args.quick else 3)
    wanted = [name for g in args.workloads.split(",") for name in GROUPS.get(g, [g])]
    clients = args.clients.split(",")
    workloads = [w for w in WORKLOADS if w.name in wanted]
    if "mqttjs" in clients:
        ensure_mqttjs()
    if "mqttkit-aio-uvloop" in clients:
        ensure_uvloop()
    broker = MosquittoBroker(
        max_queued_messages=0,
        extra_config="max_queued_bytes 0\nmax_connections -1\nset_tcp_nodelay true\n",
        log_types=("error", "warning"),
        websockets="ws" in (args.transport, args.sub_transport),
    ).start()
    urls = {"tcp": broker.url}
    if broker.websockets:
        urls["ws"] = broker.ws_url + "/mqtt"
    url = urls[args.transport]
    sub_url = urls[args.sub_transport or args.transport]
    websocket = "ws" in (args.transport, args.sub_transport)
    width = max((len(w.name) for w in workloads), default=6)
    raw: dict[str, Any] = {
        "machine": machine(args.store_dir),
        "quick": args.quick,
        "transport": args.transport,
        "sub_transport": args.sub_transport or args.transport,
        "repeats": repeats,
        "runs": [],
    }
    table: dict[tuple[str, str], list[dict[str, Any]]] = {}
    failures = []
    try:
        for w in workloads:
            for rep in range(repeats):
                for client in clients:
                    topic = f"bench/{w.name}/{client}/{rep}"
                    b0 = proc_cpu(broker.pid)
                    if websocket and not client.startswith("mqttkit"):
                        result: dict[str, Any] = {"unsupported": True}  # they take host:port
                    else:
                        result = run_one(w, client, url, topic, args.quick, args.store_dir, sub_url)
                    b1 = proc_cpu(broker.pid)
                    if b0 is not None and b1 is not None:
                        result["broker_cpu"] = b1 - b0
                    m = metrics(w, result)
                    raw["runs"].append(
                        {
                            "workload": w.name,
                            "client": client,
                            "repeat": rep,
                            "raw": result,
                            "metrics": m,
                        }
                    )
                    table.setdefault((w.name, client), []).append(m)
                    status = summary(w, m)
                    print(f"{w.name:{width}} {client:13} #{rep + 1}: {status}", flush=True)
                    if (
                        client.startswith("mqttkit")
                        and not m.get("unsupported")
                        and ("error" in m or m.get("lost"))
                    ):
                        failures.append(f"{w.name}/{client}: {status}")
    finally:
        broker.close()
    print()
    print_tables(workloads, clients, table)
    out = Path(args.out) if args.out else HERE / "results" / time.strftime("%Y%m%d-%H%M%S.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(raw, indent=1))
    print(f"\nraw results: {out}")
    if failures:
        print("\nmqttkit runs that did not complete with every message:")
        for f in failures:
            print("  " + f)
        return 1
    return 0


def render_file(path: Path) -> int:
    """Print the tables of an earlier run from its raw results."""
    raw = json.loads(path.read_text())
    table: dict[tuple[str, str], list[dict[str, Any]]] = {}
    clients: list[str] = []
    names: list[str] = []
    for run in raw["runs"]:
        table.setdefault((run["workload"], run["client"]), []).append(run["metrics"])
        if run["client"] not in clients:
            clients.append(run["client"])
        if run["workload"] not in names:
            names.append(run["workload"])
    workloads = [w for w in WORKLOADS if w.name in names]
    print(f"machine: {raw['machine']}\n")
    print_tables(workloads, clients, table)
    return 0


def print_tables(workloads: list[Workload], clients: list[str], table: dict[Any, Any]) -> None:
    print(render(workloads, clients, table))
    cpu_table = render_cpu(workloads, clients, table)
    if cpu_table:
        print("\nCPU per message by process (publisher, subscriber, broker):\n")
        print(cpu_table)
    durable_table = render_durable(workloads, clients, table)
    if durable_table:
        print(
            "\nDurable publishing: each store against the memory store (same client, same "
            "threads, same run):\n"
        )
        print(durable_table)


def summary(w: Workload, m: dict[str, Any]) -> str:
    if m.get("unsupported"):
        return "n/a"
    if "error" in m:
        return f"ERROR {m['error']}"
    if m.get("lost"):
        return f"LOST {m['lost']}"
    key = PRIMARY[w.kind]
    text = f"{key}={m[key]:.4g}"
    if "mb_per_s" in m and w.size >= 100_000:
        text += f" MB/s={m['mb_per_s']:.4g}"
    if "rss_per_conn_kb" in m:
        text += f" rss/conn={m['rss_per_conn_kb']:.3g} KB"
    if "pub_cpu_per_10k" in m:
        text += f" cpu/10k pub={m['pub_cpu_per_10k']:.3f} sub={m['sub_cpu_per_10k']:.3f}"
    if "broker_cpu_per_10k" in m:
        text += f" broker={m['broker_cpu_per_10k']:.3f}"
    if "broker_busy" in m:
        text += f" (broker busy {m['broker_busy']:.0%})"
    if "store_left" in m:
        text += f" STORE LEFT {m['store_left']}"
    return text


def median_of(ms: list[dict[str, Any]], key: str) -> float | None:
    values = [m[key] for m in ms if key in m and not m.get("lost") and "error" not in m]
    return statistics.median(values) if values else None


def render(workloads: list[Workload], clients: list[str], table: dict[Any, Any]) -> str:
    lines = [
        "| workload | client | result (median) | vs paho | vs gmqtt | vs MQTT.js "
        "| CPU s / 10k msgs | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for w in workloads:
        key = "mb_per_s" if w.name == "big" else PRIMARY[w.kind]
        lower_is_better = key in ("p50_ms", "seconds")
        refs = {c: median_of(table.get((w.name, c), []), key) for c in PEERS}
        for client in clients:
            ms = table.get((w.name, client), [])
            if ms and all(m.get("unsupported") for m in ms):
                lines.append(f"| {w.name} | {client} | n/a | | | | | |")
                continue
            value = median_of(ms, key)
            if value is None:
                bad = next((summary(w, m) for m in ms if "error" in m or m.get("lost")), "-")
                lines.append(f"| {w.name} | {client} | {bad} | | | | | |")
                continue
            ratios = []
            for ref in PEERS:
                r = refs[ref]
                if r is None or client == ref:
                    ratios.append("")
                else:
                    ratios.append(f"{(r / value) if lower_is_better else (value / r):.2f}x")
            extra = ""
            if w.kind == "rtt":
                extra = f" (p99 {median_of(ms, 'p99_ms'):.3f} ms)"
            if w.kind == "conn":
                extra = f" ({median_of(ms, 'rss_per_conn_kb'):.1f} KB/conn)"
            cpu = median_of(ms, "cpu_per_10k")
            rss = median_of(ms, "peak_rss_mb")
            unit = {"msgs_per_s": "msg/s", "mb_per_s": "MB/s", "p50_ms": "ms p50", "seconds": "s"}[
                key
            ]
            shown = f"{value:,.0f}" if value >= 1000 else f"{value:,.4g}"
            lines.append(
                f"| {w.name} | {client} | {shown} {unit}{extra} | {' | '.join(ratios)} "
                f"| {'' if cpu is None else f'{cpu:.3f}'} | {'' if rss is None else f'{rss:.0f}'} |"
            )
    return "\n".join(lines)


def render_cpu(workloads: list[Workload], clients: list[str], table: dict[Any, Any]) -> str:
    """Where the CPU goes in the flow workloads: per message, by process, and how busy the
    broker was (medians)."""
    lines = [
        "| workload | client | publisher us/msg | subscriber us/msg | broker us/msg "
        "| broker busy |",
        "|---|---|---|---|---|---|",
    ]
    for w in workloads:
        if w.kind not in ("flow", "dur"):
            continue
        for client in clients:
            ms = table.get((w.name, client), [])
            cells = []
            for key, scale in (
                ("pub_cpu_per_10k", 100),
                ("sub_cpu_per_10k", 100),
                ("broker_cpu_per_10k", 100),
            ):
                value = median_of(ms, key)
                cells.append("" if value is None else f"{value * scale:.1f}")
            busy = median_of(ms, "broker_busy")
            cells.append("" if busy is None else f"{busy:.0%}")
            if any(cells):
                lines.append(f"| {w.name} | {client} | " + " | ".join(cells) + " |")
    return "\n".join(lines) if len(lines) > 2 else ""


def durable_target(w: Workload, rate: float, ratio: float | None) -> tuple[str, str]:
    """The issue's target for a durable row, and whether this run met it ("" if none)."""
    if w.store == "batched":
        if ratio is None:
            return ">= 0.5x memory", "no reference"
        return ">= 0.5x memory", "met" if ratio >= 0.5 else "NOT MET"
    if w.store == "full" and w.threads == 8:
        return ">= 10,000 msg/s", "met" if rate >= 10_000 else "NOT MET"
    return "", ""


def render_durable(workloads: list[Workload], clients: list[str], table: dict[Any, Any]) -> str:
    """The dur1-* rows: msg/s (median), the ratio to the memory-store row of the same client
    and thread count in the same run, and the issue's targets."""
    lines = [
        "| workload | client | store | threads | msg/s (median) | vs memory store | target | met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    references = {(w.threads, w.store): w.name for w in WORKLOADS if w.kind == "dur"}
    for w in workloads:
        if w.kind != "dur":
            continue
        ref_name = references.get((w.threads, "memory"))
        for client in clients:
            ms = table.get((w.name, client), [])
            if not ms or all(m.get("unsupported") for m in ms):
                continue
            head = f"| {w.name} | {client} | {w.store} | {w.threads} |"
            value = median_of(ms, "msgs_per_s")
            if value is None:
                bad = next((summary(w, m) for m in ms if "error" in m or m.get("lost")), "-")
                lines.append(f"{head} {bad} | | | |")
                continue
            ref = median_of(table.get((ref_name, client), []), "msgs_per_s")
            ratio = None if ref is None else value / ref
            if w.store == "memory":
                shown_ratio = "(reference)"
            else:
                shown_ratio = "" if ratio is None else f"{ratio:.2f}x"
            target, met = durable_target(w, value, ratio)
            lines.append(f"{head} {value:,.0f} | {shown_ratio} | {target} | {met} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def fs_type(path: str) -> str | None:
    """The file system type of ``path`` from /proc/mounts (the longest mount point above it)."""
    best: tuple[int, str] | None = None
    real = os.path.realpath(path)
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) < 3:
                continue
            mount = fields[1]
            inside = real == mount or real.startswith(mount.rstrip("/") + "/")
            if inside and (best is None or len(mount) > best[0]):
                best = (len(mount), fields[2])
    return None if best is None else best[1]


def machine(store_dir: str | None = None) -> dict[str, Any]:
    info: dict[str, Any] = {"python": sys.version.split()[0], "cpus": os.cpu_count()}
    # Where the dur1-* store files go: "full" fsyncs, so its figures are this disk's.
    info["store_dir"] = store_dir or tempfile.gettempdir()
    info["store_fs"] = fs_type(info["store_dir"])
    with contextlib.suppress(OSError, StopIteration):
        info["cpu_model"] = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    for mod in ("paho.mqtt", "gmqtt"):
        try:
            module = __import__(mod, fromlist=["__version__"])
            info[mod] = getattr(module, "__version__", "?")
        except ImportError:
            info[mod] = None
    with contextlib.suppress(OSError, ValueError):
        package = MQTTJS / "node_modules" / "mqtt" / "package.json"
        info["mqttjs"] = json.loads(package.read_text())["version"]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        node = subprocess.run(["node", "--version"], capture_output=True, text=True, check=False)
        info["node"] = node.stdout.strip() or None
    return info


if __name__ == "__main__":
    raise SystemExit(main())
