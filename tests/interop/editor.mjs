// A scripted editor: the stock provider and a stock Y.UndoManager over every root it
// edits, with Yjs 13 (yjs + y-websocket) or Yjs 14 (@y/y + @y/websocket). Driven by
// tests/test_restore_undo.py and tests/test_interop_yjs14.py.
//
//   node editor.mjs <13|14> <server-url> <room>
//
// Reads one JSON command a line on stdin and answers each with one JSON line on stdout:
//   {"text": root, "insert": [index, string]}   {"text": root, "delete": [index, length]}
//   {"text": root, "format": [index, length, attributes]}
//   {"map": root, "set": [key, value]}          {"map": root, "delete": key}
//   {"xml": root, "paragraph": [index, string]} a paragraph element holding that text
//                                               (Yjs 13: in an XmlText; 14: directly)
//   {"xml": root, "in": index, "insert": [offset, string]} / "delete": [offset, length]
//   {"xml": root, "remove": index}              delete a whole paragraph
//   {"build14": root}                           <paragraph level=2>text<quote>nested</quote>
//   {"stop": true}                              end the undo manager's capture group
//   {"undo": true}                              undo until the stack is empty
//   {"report": true}                            {"state": base64 of the document, "json"}
//   {"quit": true}
// Every edit is a local transaction, which the undo manager tracks; the provider's
// (remote) transactions it does not, as in any editor.
import WS from 'ws'
import * as readline from 'node:readline'

globalThis.WebSocket ??= WS // y-websocket's resync timer reads the global (Node 20 lacks it)

const [major, serverUrl, room] = process.argv.slice(2)
const v14 = major === '14'
const Y = v14 ? await import('@y/y') : await import('yjs')
const { WebsocketProvider } = v14 ? await import('@y/websocket') : await import('y-websocket')

const ydoc = new Y.Doc()
const provider = new WebsocketProvider(serverUrl, room, ydoc, { WebSocketPolyfill: WS })
let undoManager = null

function root (name, kind) {
  const type = v14
    ? ydoc.get(name)
    : { text: () => ydoc.getText(name), map: () => ydoc.getMap(name), xml: () => ydoc.getXmlFragment(name) }[kind]()
  if (undoManager === null) undoManager = new Y.UndoManager(type)
  else undoManager.addToScope(type)
  return type
}

const mapSet = (map, key, value) => v14 ? map.setAttr(key, value) : map.set(key, value)
const mapDelete = (map, key) => v14 ? map.deleteAttr(key) : map.delete(key)

function paragraph (text) {
  if (v14) {
    const element = new Y.Type('paragraph')
    element.insert(0, text)
    return element
  }
  const element = new Y.XmlElement('paragraph')
  element.insert(0, [new Y.XmlText(text)])
  return element
}

function paragraphText (fragment, index) {
  const element = fragment.get(index)
  return v14 ? element : element.get(0)
}

function toJSON () {
  if (v14) {
    const out = {}
    for (const [name, type] of ydoc.share) out[name] = type.toJSON()
    return out
  }
  return ydoc.toJSON()
}

function run (command) {
  if (command.report) {
    return { state: Buffer.from(Y.encodeStateAsUpdate(ydoc)).toString('base64'), json: toJSON() }
  }
  if (command.stop) {
    undoManager?.stopCapturing()
    return {}
  }
  if (command.undo) {
    let undone = 0
    while (undoManager !== null && undoManager.undoStack.length > 0) {
      if (undoManager.undo() !== null) undone++
    }
    return { undone }
  }
  ydoc.transact(() => {
    if (command.text !== undefined) {
      const text = root(command.text, 'text')
      if (command.insert) text.insert(...command.insert)
      if (command.delete) text.delete(...command.delete)
      if (command.format) text.format(...command.format)
    } else if (command.map !== undefined) {
      const map = root(command.map, 'map')
      if (command.set) mapSet(map, ...command.set)
      if (command.delete !== undefined) mapDelete(map, command.delete)
    } else if (command.xml !== undefined) {
      const fragment = root(command.xml, 'xml')
      if (command.paragraph) fragment.insert(command.paragraph[0], [paragraph(command.paragraph[1])])
      if (command.remove !== undefined) fragment.delete(command.remove, 1)
      if (command.in !== undefined) {
        const text = paragraphText(fragment, command.in)
        if (command.insert) text.insert(...command.insert)
        if (command.delete) text.delete(...command.delete)
      }
    } else if (command.build14 !== undefined) {
      const fragment = root(command.build14, 'xml')
      const element = new Y.Type('paragraph')
      element.setAttr('level', 2)
      element.insert(0, 'v14 paragraph text')
      const quote = new Y.Type('quote')
      quote.insert(0, 'nested quote text')
      element.insert(element.length, [quote])
      fragment.insert(0, [element])
    } else {
      throw new Error(`unknown command ${JSON.stringify(command)}`)
    }
  })
  return {}
}

let ready = false
provider.on('sync', (synced) => {
  if (!synced || ready) return
  ready = true
  process.stdout.write(JSON.stringify({ ready: true }) + '\n')
})
const lines = readline.createInterface({ input: process.stdin })
lines.on('line', (line) => {
  const command = JSON.parse(line)
  if (command.quit) {
    provider.destroy()
    process.exit(0)
  }
  try {
    process.stdout.write(JSON.stringify(run(command)) + '\n')
  } catch (error) {
    process.stdout.write(JSON.stringify({ error: String(error.stack || error) }) + '\n')
  }
})
lines.on('close', () => { provider.destroy(); process.exit(0) })
