'use strict'
// MQTT.js 5 as a peer in mqttkit's benchmark: one role of bench/clients.py, in this process,
// printing the same one JSON line (bench/run.py starts it for `--clients mqttjs`).
//
//     node bench/mqttjs/client.js ROLE mqttjs --url mqtt://127.0.0.1:PORT [--n N --qos Q ...]
//
// ROLE: `sub` (subscribe, print READY, count until n messages, a STOP line on stdin or the
// timeout), `pub` (publish all n at once, then wait until every publish callback has fired:
// MQTT.js's natural way), `pubcb` (at most --window publishes in flight, each callback starts
// the next), `rtt` (sequential QoS 1 round trips to its own subscription), `fanin` (--clients
// publishing clients in this one process). Other roles print {"unsupported": true}.
//
// Times are CLOCK_MONOTONIC in seconds (process.hrtime.bigint(); on Linux the clock of
// Python's time.monotonic(), so the runner compares them with the subscriber's); CPU seconds
// from process.cpuUsage(); peak RSS (KB) from process.resourceUsage().maxRSS. MQTT 3.1.1.
// Every payload starts with its sequence number (8 bytes, big endian), as in clients.py.

const mqtt = require('mqtt')

function parseArgs (argv) {
  const a = {
    role: argv[0],
    client: argv[1],
    url: null,
    topic: 'bench/t',
    n: 1000,
    qos: 0,
    size: 64,
    clients: 100,
    window: 100,
    timeout: 120
  }
  for (let i = 2; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '').replace(/-/g, '_')
    const value = argv[i + 1]
    if (['n', 'qos', 'size', 'clients', 'window', 'timeout'].includes(key)) {
      a[key] = Number(value)
    } else {
      a[key] = value
    }
  }
  return a
}

function monotonic () {
  return Number(process.hrtime.bigint()) / 1e9
}

function cpu () {
  const u = process.cpuUsage()
  return (u.user + u.system) / 1e6
}

function emit (result) {
  if (result.peak_rss_kb === undefined) result.peak_rss_kb = process.resourceUsage().maxRSS
  process.stdout.write(JSON.stringify(result) + '\n') // synchronous for pipes on Linux
}

let finished = false

function finish (result, code = 0) {
  if (finished) return
  finished = true
  emit(result)
  process.exit(code)
}

// The publish callbacks fired so far (pub, pubcb, fanin), for the error when the broker closes
// the connection first (Mosquitto 2.0 closes a 3.1.1 client that has more than its window of 20
// QoS 2 messages in flight; MQTT.js has no window of its own).
const progress = { completed: 0, n: 0 }

// Ends a client on purpose: its 'close' is then no error.
function end (client, ...args) {
  client.benchEnding = true
  return client.end(...args)
}

function payloadFor (i, size) {
  const buf = Buffer.alloc(Math.max(size, 8), 'x')
  buf.writeUInt32BE(Math.floor(i / 2 ** 32), 0)
  buf.writeUInt32BE(i % 2 ** 32, 4)
  return buf
}

function seqOf (payload) {
  return payload.readUInt32BE(0) * 2 ** 32 + payload.readUInt32BE(4)
}

function connect (a) {
  return new Promise((resolve, reject) => {
    const client = mqtt.connect(a.url, {
      protocolVersion: 4,
      keepalive: 60,
      clean: true,
      reconnectPeriod: 0,
      connectTimeout: 10000
    })
    client.on('close', () => {
      if (client.benchEnding) return
      const done = progress.n ? ` after ${progress.completed} of ${progress.n} publish callbacks` : ''
      fail(`the broker closed the connection${done}`)
    })
    client.once('connect', () => {
      // Node does not disable Nagle's algorithm by default, nor does MQTT.js: the harness
      // sets TCP_NODELAY, as it does for paho, so that the comparison is of the clients' work.
      if (client.stream && typeof client.stream.setNoDelay === 'function') {
        client.stream.setNoDelay(true)
      }
      resolve(client)
    })
    client.once('error', reject)
  })
}

function subscribe (client, topic, qos) {
  return new Promise((resolve, reject) => {
    client.subscribe(topic, { qos }, (err, granted) => {
      if (err) reject(err)
      else if (granted.some((g) => g.qos === 128)) reject(new Error('subscription refused'))
      else resolve(granted)
    })
  })
}

function fail (message) {
  finish({ error: message })
}

async function sub (a) {
  const client = await connect(a)
  const seen = new Set()
  let received = 0
  let first = 0
  let last = 0
  let c0 = 0
  let stopped = false
  const stop = () => {
    if (stopped) return
    stopped = true
    const c1 = cpu()
    end(client, true)
    finish({
      received,
      distinct: seen.size,
      duplicates: received - seen.size,
      first,
      last,
      cpu: c1 - c0
    })
  }
  client.on('message', (topic, payload) => {
    const now = monotonic()
    if (!received) first = now
    received++
    seen.add(seqOf(payload))
    last = now
    if (seen.size >= a.n) stop()
  })
  await subscribe(client, a.topic, a.qos)
  process.stdout.write('READY\n')
  c0 = cpu()
  // The runner's STOP line (once the publisher is done and a grace period has passed).
  let buffered = ''
  process.stdin.setEncoding('utf8')
  process.stdin.on('data', (chunk) => {
    buffered += chunk
    if (buffered.split('\n').some((line) => line.trim() === 'STOP')) stop()
  })
  setTimeout(stop, a.timeout * 1000).unref()
}

// Publish message i; `done(err)` when MQTT.js calls the publish callback.
function publisher (client, a) {
  const opts = { qos: a.qos }
  return (i, done) => client.publish(a.topic, payloadFor(i, a.size), opts, done)
}

function guard (a) {
  setTimeout(() => fail(`timed out after ${a.timeout} s`), a.timeout * 1000).unref()
}

async function pub (a) {
  const client = await connect(a)
  const payloads = Array.from({ length: a.n }, (_, i) => payloadFor(i, a.size))
  const opts = { qos: a.qos }
  let completed = 0
  progress.n = a.n
  guard(a)
  const c0 = cpu()
  const start = monotonic()
  const callback = (err) => {
    if (err) fail(`publish callback error: ${err.message || err}`)
    progress.completed = ++completed
    if (completed === a.n) {
      const endTime = monotonic()
      const c1 = cpu()
      end(client, () => finish({ start, end: endTime, cpu: c1 - c0 }))
    }
  }
  if (a.qos === 0) {
    // QoS 0: no callback per message (with one, each publish that finds the socket's buffer
    // full adds a 'drain' listener of its own, removed by a linear search: O(N^2) for a
    // burst). QoS 0 callbacks fire in order once written: the last one's says all were.
    progress.completed = 0
    const last = payloads.length - 1
    payloads.forEach((p, i) => {
      if (i < last) client.publish(a.topic, p, opts)
      else client.publish(a.topic, p, opts, (err) => {
        completed = a.n - 1
        callback(err)
      })
    })
    return
  }
  for (const p of payloads) client.publish(a.topic, p, opts, callback)
}

async function pubcb (a) {
  // The "callback and window" shape: at most a.window publishes in flight; each callback
  // frees a slot. The run ends when every callback has fired; any error fails it.
  const client = await connect(a)
  const payloads = Array.from({ length: a.n }, (_, i) => payloadFor(i, a.size))
  const opts = { qos: a.qos }
  let next = 0
  let inflight = 0
  let completed = 0
  progress.n = a.n
  let pumping = false
  let start = 0
  let c0 = 0
  guard(a)
  const pump = () => {
    if (pumping) return // a callback run from inside publish(): the loop below goes on
    pumping = true
    while (inflight < a.window && next < a.n) {
      inflight++
      client.publish(a.topic, payloads[next++], opts, callback)
    }
    pumping = false
  }
  const callback = (err) => {
    if (err) fail(`publish callback error: ${err.message || err}`)
    inflight--
    progress.completed = ++completed
    if (completed === a.n) {
      const endTime = monotonic()
      const c1 = cpu()
      end(client, () => finish({ start, end: endTime, cpu: c1 - c0 }))
      return
    }
    pump()
  }
  c0 = cpu()
  start = monotonic()
  pump()
}

async function rtt (a) {
  const client = await connect(a)
  let got = null
  client.on('message', () => {
    if (got) {
      const resolve = got
      got = null
      resolve(true)
    }
  })
  await subscribe(client, a.topic, 1)
  const samples = []
  const payload = payloadFor(0, a.size)
  const opts = { qos: 1 }
  const c0 = cpu()
  for (let i = 0; i < a.n; i++) {
    const back = new Promise((resolve) => {
      got = resolve
      setTimeout(() => resolve(false), 5000).unref()
    })
    const t0 = process.hrtime.bigint()
    client.publish(a.topic, payload, opts)
    if (!(await back)) break
    samples.push(Number(process.hrtime.bigint() - t0) / 1e9)
  }
  const c1 = cpu()
  end(client, true)
  finish({ samples, cpu: c1 - c0 })
}

async function fanin (a) {
  const clients = await Promise.all(Array.from({ length: a.clients }, () => connect(a)))
  const per = Math.floor(a.n / a.clients)
  const total = per * a.clients
  const opts = { qos: a.qos }
  let completed = 0
  progress.n = total
  guard(a)
  const c0 = cpu()
  const start = monotonic()
  const callback = (err) => {
    if (err) fail(`publish callback error: ${err.message || err}`)
    progress.completed = ++completed
    if (completed === total) {
      const endTime = monotonic()
      const c1 = cpu()
      for (const c of clients) end(c, true)
      finish({ start, end: endTime, cpu: c1 - c0 })
    }
  }
  for (let i = 0; i < per; i++) {
    for (let k = 0; k < clients.length; k++) {
      clients[k].publish(a.topic, payloadFor(k * per + i, a.size), opts, callback)
    }
  }
}

const ROLES = { sub, pub, pubcb, rtt, fanin }

function main () {
  const a = parseArgs(process.argv.slice(2))
  if (a.role === 'clock') {
    // For the check that this clock is Python's time.monotonic() (see BENCHMARKS.md).
    finish({ monotonic: monotonic() })
  }
  const role = ROLES[a.role]
  if (!role || !a.url) {
    if (a.role === 'sub') process.stdout.write('READY\n')
    finish({ unsupported: true })
  }
  // Whatever happens, one JSON line: a loop that ran dry without a result is an error.
  process.on('beforeExit', () => fail('the event loop ran dry before the role completed'))
  role(a).catch((err) => fail(`${err.message || err}`))
}

main()
