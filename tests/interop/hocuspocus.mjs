// Stock @hocuspocus/provider clients (unchanged) driven by tests/test_interop_hocuspocus.py.
//
//   node hocuspocus.mjs <server-url> --name NAME [--shared 1]
//
// Reads one JSON command a line on stdin and answers each with one JSON line on stdout:
//   {"cmd": "open", "doc": D, "token": T, "url": U}  a provider for D (over the one shared
//        HocuspocusProviderWebsocket with --shared 1, else its own socket at U or the
//        server URL); answers once it is synced or its authentication failed.
//   {"cmd": "insert", "doc": D, "text": X}  append X to Y.Text "content" of D.
//   {"cmd": "wait", "doc": D, "text": [...], "peers": [...], "gone": [...], "unsynced": N,
//        "closed": true, "failed": true, "scope": S, "stateless": [...], "waitTimeout": MS}
//        wait until D holds every text, sees every peer name in its awareness and none of
//        the gone, has N unsynced changes, was closed by the server, was refused, has
//        scope S, got every stateless payload; answers D's state (exit 2 on timeout).
//   {"cmd": "state", "doc": D}, {"cmd": "stateless", "doc": D, "payload": P},
//   {"cmd": "destroy", "doc": D}.
// A state: {doc, synced, scope, failed, text, peers, unsynced, closed, stateless, status}.
// End of stdin destroys every provider and exits 0.

import WS from 'ws'
import * as Y from 'yjs'
import { HocuspocusProvider, HocuspocusProviderWebsocket } from '@hocuspocus/provider'
import readline from 'node:readline'

const [url, ...rest] = process.argv.slice(2)
const opts = {}
for (let i = 0; i < rest.length; i += 2) opts[rest[i].replace(/^--/, '')] = rest[i + 1]
const name = opts.name ?? 'node'
const shared = opts.shared === '1'
  ? new HocuspocusProviderWebsocket({ url, WebSocketPolyfill: WS })
  : null
const docs = new Map()

function state (entry) {
  const peers = []
  for (const [clientId, s] of entry.provider.awareness.getStates()) {
    if (clientId !== entry.doc.clientID && s.user) peers.push(s.user.name)
  }
  return {
    doc: entry.name,
    synced: entry.provider.isSynced,
    scope: entry.provider.authorizedScope ?? null,
    failed: entry.failed,
    text: entry.doc.getText('content').toString(),
    peers: peers.sort(),
    unsynced: entry.provider.unsyncedChanges,
    closed: entry.closed,
    stateless: entry.stateless,
    status: entry.provider.configuration.websocketProvider.status
  }
}

function open ({ doc: docName, token, url: own }) {
  const doc = new Y.Doc()
  const entry = { name: docName, doc, failed: null, closed: null, stateless: [] }
  const settled = new Promise((resolve) => {
    const config = {
      name: docName,
      document: doc,
      token: token ?? '',
      onSynced: () => resolve(),
      onAuthenticationFailed: ({ reason }) => { entry.failed = reason; resolve() },
      onClose: ({ event }) => { entry.closed = event.reason ?? String(event.code) },
      onStateless: ({ payload }) => { entry.stateless.push(payload) }
    }
    if (shared) config.websocketProvider = shared
    else Object.assign(config, { url: own ?? url, WebSocketPolyfill: WS })
    entry.provider = new HocuspocusProvider(config)
    if (shared) entry.provider.attach()
  })
  entry.provider.awareness.setLocalStateField('user', { name })
  docs.set(docName, entry)
  return settled.then(() => state(entry))
}

function met (entry, want) {
  const s = state(entry)
  return (want.text ?? []).every((t) => s.text.includes(t)) &&
    (want.peers ?? []).every((p) => s.peers.includes(p)) &&
    (want.gone ?? []).every((p) => !s.peers.includes(p)) &&
    (want.unsynced === undefined || s.unsynced === want.unsynced) &&
    (!want.closed || s.closed !== null) &&
    (!want.failed || s.failed !== null) &&
    (want.scope === undefined || s.scope === want.scope) &&
    (want.stateless ?? []).every((p) => s.stateless.includes(p))
}

async function wait (entry, want) {
  const deadline = Date.now() + (want.waitTimeout ?? 15000)
  while (!met(entry, want)) {
    if (Date.now() > deadline) {
      console.error(`timed out waiting for ${JSON.stringify(want)}: ${JSON.stringify(state(entry))}`)
      process.exit(2)
    }
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  return state(entry)
}

async function run (command) {
  const entry = docs.get(command.doc)
  switch (command.cmd) {
    case 'open': return open(command)
    case 'insert': {
      const text = entry.doc.getText('content')
      text.insert(text.length, command.text)
      return state(entry)
    }
    case 'wait': return wait(entry, command)
    case 'state': return state(entry)
    case 'stateless': entry.provider.sendStateless(command.payload); return state(entry)
    case 'destroy': entry.provider.destroy(); docs.delete(command.doc); return { doc: command.doc }
    default: throw new Error(`unknown command ${command.cmd}`)
  }
}

const lines = readline.createInterface({ input: process.stdin })
for await (const line of lines) {
  if (!line.trim()) continue
  console.log(JSON.stringify(await run(JSON.parse(line))))
}
for (const entry of docs.values()) entry.provider.destroy()
shared?.destroy()
process.exit(0)
