// Documents of kinds pycrdt cannot write, made by Yjs itself, and Yjs' own reading of
// a document: tests/test_interop_kinds.py checks collab's export of them and that Yjs reads a
// collab-written copy exactly as the original.
//
//   node kinds.mjs make     prints {"<kind>": base64 state, ...}
//   node kinds.mjs read     reads one base64 state a line on stdin (prefixed "13 " or
//                           "14 "), prints Yjs' view of each, one JSON line each
import * as readline from 'node:readline'
import * as Y13 from 'yjs'
import * as Y14 from '@y/y'

const b64 = (update) => Buffer.from(update).toString('base64')

function make () {
  const out = {}
  {
    // Lexical's shape: an XmlText root of XmlText paragraphs with attributes, each
    // holding a Map (the text node's properties) before its text; a bold run formatted.
    const doc = new Y13.Doc()
    const root = doc.get('root', Y13.XmlText)
    const paragraph = new Y13.XmlText()
    root.insertEmbed(0, paragraph)
    paragraph.setAttribute('__type', 'paragraph')
    const props = new Y13.Map()
    paragraph.insertEmbed(0, props)
    props.set('__type', 'text')
    props.set('__format', 1)
    paragraph.insert(1, 'bold words', { bold: true })
    paragraph.insert(11, ' plain')
    root.setAttribute('__dir', 'ltr')
    out.lexical = b64(Y13.encodeStateAsUpdate(doc))
  }
  {
    const doc = new Y13.Doc()
    const hook = new Y13.XmlHook('widget')
    hook.set('size', 3)
    doc.getXmlFragment('hooks').insert(0, [hook])
    out.hook = b64(Y13.encodeStateAsUpdate(doc))
  }
  {
    const doc = new Y13.Doc()
    doc.getMap('docs').set('child', new Y13.Doc({ guid: 'sub-guid-1' }))
    const text = doc.getText('attributed')
    text.insert(0, 'has attributes')
    text.setAttribute('lang', 'en')
    doc.getArray('mixed').insert(0, [1, 'two', new Uint8Array([3, 4]), { five: [5] }, new Y13.Text('six')])
    out.v13kinds = b64(Y13.encodeStateAsUpdate(doc))
  }
  {
    const doc = new Y14.Doc()
    const root = doc.get('default')
    root.setAttr('version', 2)
    const element = new Y14.Type('paragraph')
    element.insert(0, 'text in an element')
    const inner = new Y14.Type()
    inner.setAttr('k', 'v')
    inner.insert(0, [1, 'two'])
    root.insert(0, [element, inner])
    out.v14kinds = b64(Y14.encodeStateAsUpdate(doc))
  }
  process.stdout.write(JSON.stringify(out) + '\n')
}

function view13 (doc) {
  const out = {}
  for (const [name, type] of doc.share) out[name] = deep13(type)
  return out
}

// A generic reading of any Yjs 13 type: its map entries and its sequence's content,
// text as delta runs, nested types read the same way.
function deep13 (type) {
  const entries = {}
  for (const [key, item] of type._map) {
    if (!item.deleted) entries[key] = value13(item.content.getContent().at(-1))
  }
  const sequence = []
  let attributes = {}
  for (let item = type._start; item !== null; item = item.right) {
    if (item.deleted) continue
    const c = item.content
    if (c instanceof Y13.ContentFormat) {
      attributes = { ...attributes, [c.key]: c.value }
      if (c.value === null) delete attributes[c.key]
    } else if (c instanceof Y13.ContentString) {
      sequence.push({ text: c.str, attributes })
    } else {
      for (const value of c.getContent()) sequence.push({ value: value13(value), attributes })
    }
  }
  const name = type.nodeName ?? type.hookName ?? null
  return { ref: type.constructor.name, name, entries, sequence }
}

function value13 (value) {
  if (value instanceof Y13.AbstractType) return deep13(value)
  if (value instanceof Y13.Doc) return { subdocument: value.guid }
  if (value instanceof Uint8Array) return { binary: Array.from(value) }
  return value === undefined ? null : value
}

function view14 (doc) {
  const out = {}
  for (const [name, type] of doc.share) out[name] = type.toJSON()
  return out
}

if (process.argv[2] === 'make') make()
else {
  const lines = readline.createInterface({ input: process.stdin })
  lines.on('line', (line) => {
    const [major, state] = line.split(' ')
    const Y = major === '14' ? Y14 : Y13
    const doc = new Y.Doc()
    Y.applyUpdate(doc, Buffer.from(state, 'base64'))
    if (major === '13') {
      // Yjs 13 fixes a root's type on first read; read each as the kind it was made.
      doc.get('root', Y13.XmlText); doc.getMap('docs')
      doc.getText('attributed'); doc.getArray('mixed')
    }
    process.stdout.write(JSON.stringify(major === '14' ? view14(doc) : view13(doc)) + '\n')
  })
}
