// A stock y-websocket client (yjs + y-websocket + ws, unchanged) driven by tests/test_interop.py.
//
//   node client.mjs <command> <server-url> <room> [--option value ...]
//
// Commands:
//   sync      connect, wait for the first sync, optionally insert text / wait for text / stay
//             connected for a while (with --resync), then report what was seen.
//   edit      interleave --count inserts of "<NAME:i>" between tokens of Y.Text "content"
//             with the other peers' edits, set map entry NAME, wait for every peer's inserts
//             and map entries, report the text and map.
//   presence  set awareness field user = {name: NAME}, wait until the --expect-peer state is
//             seen, print a "ready" line, then on each stdin line: "leave" (set the local
//             state to null but stay connected) or end of stdin / "quit" (destroy and exit).
//   rich      with --build 1, write every root type with the stock Yjs API (formatted text,
//             nested maps, an array, XML with attributes); print a "ready" line with what the
//             document holds, then on each stdin line "report" print it again, and on end of
//             stdin / "quit" destroy and exit.
//
// Options: --params JSON (URL query parameters), --insert TEXT, --expect TEXT (repeatable),
// --hold MS, --resync MS, --name NAME, --count N, --peers A,B,C, --delay MS, --seed N,
// --expect-peer NAME, --timeout MS (default 20000).
//
// Prints one JSON line with the results on stdout ("presence" prints a {"ready": ...} line
// first), exits 0 on success, or prints the error on stderr and exits 1 (2 on timeout).

import WS from 'ws'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'

// y-websocket's resyncInterval timer tests `ws.readyState === WebSocket.OPEN` with the
// *global* WebSocket, which Node 20 does not define (Node >= 22 does): without this line the
// timer throws ReferenceError. It does not change which class the provider uses.
globalThis.WebSocket ??= WS

function parseArgs (argv) {
  const [command, url, room, ...rest] = argv
  if (!command || !url || room === undefined) {
    throw new Error('usage: node client.mjs <sync|edit|presence> <server-url> <room> [options]')
  }
  const opts = { expect: [] }
  for (let i = 0; i < rest.length; i += 2) {
    const key = rest[i].replace(/^--/, '').replace(/-(\w)/g, (_, c) => c.toUpperCase())
    if (rest[i + 1] === undefined) throw new Error(`option ${rest[i]} needs a value`)
    if (key === 'expect') opts.expect.push(rest[i + 1])
    else opts[key] = rest[i + 1]
  }
  return { command, url, room, opts }
}

const { command, url, room, opts } = parseArgs(process.argv.slice(2))
const timeoutMs = Number(opts.timeout ?? 20000)
const started = Date.now()

// What the client's sockets received: every message size, and how many of each kind.
const stats = {
  connections: 0,
  messages: 0,
  bytes: 0,
  maxMessage: 0,
  syncStep1: 0,
  syncStep2: 0,
  updates: 0,
  awareness: 0,
  closes: []
}

class RecordingWebSocket extends WS {
  constructor (...args) {
    super(...args)
    stats.connections++
    this.on('message', (data) => {
      const bytes = new Uint8Array(Array.isArray(data) ? Buffer.concat(data) : data)
      stats.messages++
      stats.bytes += bytes.length
      stats.maxMessage = Math.max(stats.maxMessage, bytes.length)
      if (bytes[0] === 0) {
        if (bytes[1] === 0) stats.syncStep1++
        else if (bytes[1] === 1) stats.syncStep2++
        else if (bytes[1] === 2) stats.updates++
      } else if (bytes[0] === 1) {
        stats.awareness++
      }
    })
    this.on('close', (code, reason) => stats.closes.push({ code, reason: reason.toString() }))
  }
}

function fail (message, code = 1) {
  process.stderr.write(`interop client (${command} ${room}): ${message}\n`)
  process.exit(code)
}

const timer = setTimeout(
  () => fail(`timed out after ${timeoutMs} ms; stats ${JSON.stringify(stats)}`, 2),
  timeoutMs
)

const doc = new Y.Doc()
const text = doc.getText('content')
const map = doc.getMap('meta')
const events = { synced: 0, statuses: [], connectionErrors: 0, connectionCloses: 0 }
const provider = new WebsocketProvider(url, room, doc, {
  WebSocketPolyfill: RecordingWebSocket,
  disableBc: true,
  params: opts.params ? JSON.parse(opts.params) : {},
  resyncInterval: opts.resync ? Number(opts.resync) : -1
})
provider.on('synced', (state) => { if (state) events.synced++ })
provider.on('status', ({ status }) => events.statuses.push(status))
provider.on('connection-error', () => { events.connectionErrors++ })
provider.on('connection-close', () => { events.connectionCloses++ })

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/** Resolve once `predicate()` holds; it is checked after every document change. */
function until (predicate) {
  return new Promise((resolve) => {
    const check = () => {
      if (predicate()) {
        doc.off('update', check)
        resolve()
      }
    }
    doc.on('update', check)
    check()
  })
}

function synced () {
  return new Promise((resolve) => {
    if (provider.synced) resolve()
    else provider.once('synced', () => resolve())
  })
}

/** Wait until the socket has handed everything we sent to the kernel. */
async function drained () {
  while (provider.ws && provider.ws.bufferedAmount > 0) await sleep(10)
}

function report (extra = {}) {
  return {
    url: provider.url,
    clientId: doc.clientID,
    text: text.toString(),
    map: map.toJSON(),
    synced: provider.synced,
    connected: provider.wsconnected,
    events,
    stats,
    ms: Date.now() - started,
    ...extra
  }
}

/** Print `result` (taken before the provider is destroyed), destroy the provider, exit. */
async function finish (result) {
  const line = JSON.stringify(result) + '\n'
  await drained()
  provider.destroy()
  clearTimeout(timer)
  process.stdout.write(line, () => process.exit(0))
}

async function runSync () {
  await synced()
  if (opts.insert) text.insert(text.length, opts.insert)
  await until(() => opts.expect.every((part) => text.toString().includes(part)))
  if (opts.hold) await sleep(Number(opts.hold))
  await finish(report())
}

/** A small deterministic generator, so a failing run can be repeated. */
function random (seed) {
  let state = seed >>> 0 || 1
  return () => {
    state ^= state << 13
    state ^= state >>> 17
    state ^= state << 5
    return (state >>> 0) / 4294967296
  }
}

async function runEdit () {
  const name = opts.name ?? 'node'
  const count = Number(opts.count ?? 50)
  const delay = Number(opts.delay ?? 5)
  const peers = (opts.peers ?? name).split(',')
  const next = random(Number(opts.seed ?? 1))
  await synced()
  for (let i = 0; i < count; i++) {
    // Only between tokens (after a '>'), so that no insert splits another peer's token.
    const content = text.toString()
    const boundaries = [0, ...[...content].flatMap((c, at) => c === '>' ? [at + 1] : [])]
    text.insert(boundaries[Math.floor(next() * boundaries.length)], `<${name}:${i}>`)
    await sleep(delay)
  }
  map.set(name, { count, by: 'node' })
  const complete = () => {
    const content = text.toString()
    return peers.every((peer) => {
      if (!map.has(peer)) return false
      for (let i = 0; i < count; i++) if (!content.includes(`<${peer}:${i}>`)) return false
      return true
    })
  }
  await until(complete)
  await finish(report())
}

async function runPresence () {
  const name = opts.name ?? 'node'
  provider.awareness.setLocalStateField('user', { name })
  await synced()
  const names = () => [...provider.awareness.getStates().values()]
    .map((state) => state?.user?.name)
  if (opts.expectPeer) {
    await new Promise((resolve) => {
      const check = () => {
        if (names().includes(opts.expectPeer)) {
          provider.awareness.off('change', check)
          resolve()
        }
      }
      provider.awareness.on('change', check)
      check()
    })
  }
  const seen = names()
  process.stdout.write(JSON.stringify({ ready: true, clientId: doc.clientID, seen }) + '\n')
  const lines = []
  process.stdin.setEncoding('utf8')
  process.stdin.on('data', (chunk) => {
    for (const line of chunk.split('\n')) {
      if (line.trim() === 'leave') {
        provider.awareness.setLocalState(null)
        lines.push('leave')
      } else if (line.trim() === 'quit') {
        finish(report({ seen, lines }))
      }
    }
  })
  process.stdin.on('end', () => finish(report({ seen, lines })))
}

/** Every root the rich command writes, as the stock client reads them. */
function richView () {
  return {
    rich: doc.getText('rich').toDelta(),
    settings: doc.getMap('settings').toJSON(),
    items: doc.getArray('items').toJSON(),
    prose: doc.getXmlFragment('prose').toString(),
    connections: stats.connections
  }
}

function buildRich () {
  doc.transact(() => {
    const rich = doc.getText('rich')
    rich.insert(0, 'plain bold italic')
    rich.format(6, 4, { bold: true })
    rich.format(11, 6, { italic: true })
    const settings = doc.getMap('settings')
    settings.set('theme', 'dark')
    const nested = new Y.Map()
    settings.set('nested', nested)
    nested.set('list', [1, 2, { deep: true }])
    const tags = new Y.Array()
    settings.set('tags', tags)
    tags.push(['a', 'b'])
    doc.getArray('items').push([1, 'two', { three: 3 }, true, null])
    const paragraph = new Y.XmlElement('paragraph')
    paragraph.setAttribute('align', 'center')
    const words = new Y.XmlText()
    words.insert(0, 'hello world')
    words.format(0, 5, { bold: {} })
    paragraph.insert(0, [words])
    doc.getXmlFragment('prose').insert(0, [paragraph])
  })
}

async function runRich () {
  await synced()
  if (opts.build) buildRich()
  await drained()
  process.stdout.write(JSON.stringify({ ready: true, ...richView() }) + '\n')
  process.stdin.setEncoding('utf8')
  process.stdin.on('data', (chunk) => {
    for (const line of chunk.split('\n')) {
      if (line.trim() === 'report') process.stdout.write(JSON.stringify(richView()) + '\n')
      else if (line.trim() === 'quit') finish(richView())
    }
  })
  process.stdin.on('end', () => finish(richView()))
}

const commands = { sync: runSync, edit: runEdit, presence: runPresence, rich: runRich }
if (!commands[command]) fail(`unknown command ${command}`)
commands[command]().catch((error) => fail(error?.stack ?? String(error)))
