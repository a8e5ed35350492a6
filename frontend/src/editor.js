// The editor page: one document, edited through TipTap, synced by the stock
// y-websocket provider with the server that served this page.
import { Editor, Extension } from '@tiptap/core'
import StarterKit from '@tiptap/starter-kit'
import Collaboration from '@tiptap/extension-collaboration'
import CollaborationCaret from '@tiptap/extension-collaboration-caret'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import { setupHistory } from './history.js'
import * as authProtocol from 'y-protocols/auth'
import { loadUser, mountBase, rememberDoc, saveUser } from './identity.js'
import { canWrite, permissionFor, providerParams } from './session.js'

const meta = (name) => document.querySelector(`meta[name="${name}"]`).content
const docName = meta('collab-doc')
const scheme = window.location.protocol === 'https:' ? 'wss:' : 'ws:'
const serverUrl = `${scheme}//${window.location.host}${mountBase}${meta('collab-room-prefix')}`

const ydoc = new Y.Doc()
const provider = new WebsocketProvider(serverUrl, docName, ydoc, { params: providerParams() })
const user = loadUser()
rememberDoc(docName)

function promptLink (editor) {
  if (editor.isActive('link')) return editor.chain().focus().unsetLink().run()
  const url = window.prompt('Link to (URL):', 'https://')
  if (!url || url === 'https://') return false
  return editor.chain().focus().extendMarkRange('link').setLink({ href: url }).run()
}

const LinkShortcut = Extension.create({
  name: 'linkShortcut',
  addKeyboardShortcuts () {
    return { 'Mod-k': () => promptLink(this.editor) }
  }
})

const editor = new Editor({
  element: document.getElementById('editor'),
  extensions: [
    // Collaboration brings its own undo, which undoes only this user's changes.
    StarterKit.configure({ undoRedo: false, link: { openOnClick: false, autolink: true } }),
    Collaboration.configure({ document: ydoc, field: 'default' }),
    CollaborationCaret.configure({ provider, user }),
    LinkShortcut
  ],
  editorProps: { attributes: { class: 'prose', 'aria-label': `Document ${docName}`, spellcheck: 'true' } }
})

// --- toolbar

const commands = {
  bold: (chain) => chain.toggleBold(),
  italic: (chain) => chain.toggleItalic(),
  strike: (chain) => chain.toggleStrike(),
  code: (chain) => chain.toggleCode(),
  h1: (chain) => chain.toggleHeading({ level: 1 }),
  h2: (chain) => chain.toggleHeading({ level: 2 }),
  bulletList: (chain) => chain.toggleBulletList(),
  orderedList: (chain) => chain.toggleOrderedList(),
  blockquote: (chain) => chain.toggleBlockquote(),
  codeBlock: (chain) => chain.toggleCodeBlock(),
  undo: (chain) => chain.undo(),
  redo: (chain) => chain.redo()
}
const active = {
  bold: () => editor.isActive('bold'),
  italic: () => editor.isActive('italic'),
  strike: () => editor.isActive('strike'),
  code: () => editor.isActive('code'),
  link: () => editor.isActive('link'),
  h1: () => editor.isActive('heading', { level: 1 }),
  h2: () => editor.isActive('heading', { level: 2 }),
  bulletList: () => editor.isActive('bulletList'),
  orderedList: () => editor.isActive('orderedList'),
  blockquote: () => editor.isActive('blockquote'),
  codeBlock: () => editor.isActive('codeBlock')
}
const toolbar = document.getElementById('toolbar')

toolbar.addEventListener('click', (event) => {
  const button = event.target.closest('button[data-command]')
  if (!button) return
  const name = button.dataset.command
  if (name === 'link') promptLink(editor)
  else commands[name](editor.chain().focus()).run()
})

function refreshToolbar () {
  for (const button of toolbar.querySelectorAll('button[data-command]')) {
    const name = button.dataset.command
    if (active[name]) button.setAttribute('aria-pressed', String(active[name]()))
    if (name === 'undo') button.disabled = !editor.can().undo()
    if (name === 'redo') button.disabled = !editor.can().redo()
  }
}
editor.on('transaction', refreshToolbar)
refreshToolbar()

// --- who is here

const nameInput = document.getElementById('user-name')
nameInput.value = user.name
document.getElementById('my-color').style.backgroundColor = user.color
nameInput.addEventListener('change', () => {
  const name = nameInput.value.trim()
  if (!name) {
    nameInput.value = user.name
    return
  }
  user.name = name
  saveUser(user)
  editor.commands.updateUser({ ...user })
})
nameInput.addEventListener('keydown', (event) => {
  if (event.key === 'Enter') {
    nameInput.dispatchEvent(new Event('change'))
    editor.commands.focus()
  }
})

function renderPresence () {
  const people = []
  provider.awareness.getStates().forEach((state, clientId) => {
    if (state?.user?.name) people.push({ clientId, me: clientId === ydoc.clientID, ...state.user })
  })
  people.sort((a, b) => (b.me - a.me) || a.name.localeCompare(b.name))
  document.getElementById('presence').replaceChildren(...people.map((person) => {
    const li = document.createElement('li')
    li.dataset.clientId = String(person.clientId)
    if (person.me) li.classList.add('me')
    const swatch = document.createElement('span')
    swatch.className = 'swatch'
    swatch.style.backgroundColor = person.color
    const name = document.createElement('span')
    name.className = 'name'
    name.textContent = person.me ? `${person.name} (you)` : person.name
    li.append(swatch, name)
    return li
  }))
}
provider.awareness.on('change', renderPresence)
renderPresence()

// --- connection state, always visible

const statusEl = document.getElementById('status')
const labels = {
  connecting: 'Connecting…',
  connected: 'Connected',
  offline: 'Offline · reconnecting…',
  closed: 'Disconnected'
}
let hasBeenOnline = false
let hasFailed = false
let closedFor = null // the reason of a close the provider takes as final (44xx)

function refreshStatus () {
  let state = 'offline'
  if (provider.wsconnected && provider.synced && navigator.onLine) state = 'connected'
  else if (closedFor !== null) state = 'closed'
  else if (!hasBeenOnline && !hasFailed && navigator.onLine) state = 'connecting'
  statusEl.dataset.status = state
  statusEl.textContent = labels[state]
  document.body.dataset.connection = state
}
provider.on('status', refreshStatus)
provider.on('sync', (synced) => {
  hasBeenOnline ||= synced
  refreshStatus()
})
provider.on('connection-close', () => {
  hasFailed = true
  refreshStatus()
})
// No token, a revoked one, a deleted document: y-websocket stops reconnecting, so say why
// instead of "reconnecting" forever. Reopening the page (with a new link) tries again.
provider.on('closed', ({ code, reason }) => {
  closedFor = reason || `closed with ${code}`
  refreshStatus()
  showNotice(`Disconnected: ${closedFor}`)
})
window.addEventListener('online', refreshStatus)
window.addEventListener('offline', refreshStatus)
refreshStatus()

// --- versions

const history = setupHistory(docName)

// --- what this user may do

const noticeEl = document.getElementById('notice')

function showNotice (text) {
  noticeEl.textContent = text
  noticeEl.hidden = !text
}

function setReadOnly () {
  editor.setEditable(false)
  document.body.classList.add('read-only')
  document.getElementById('access').hidden = false
  for (const button of toolbar.querySelectorAll('button')) button.disabled = true
  history.setReadOnly(true)
}

permissionFor(docName).then((permission) => {
  if (!canWrite(permission)) setReadOnly()
})

// The server refuses what this user may not do with the protocol's auth message.
provider.messageHandlers[2] = (_encoder, decoder) => {
  authProtocol.readAuthMessage(decoder, ydoc, (_doc, reason) => {
    if (/read-only/.test(reason)) setReadOnly()
    showNotice(`Not saved: ${reason}`)
  })
}

editor.commands.focus('end')
// For scripts and tests driving the page; state() is the document as Yjs encodes it.
window.collab = { editor, provider, ydoc, state: () => Y.encodeStateAsUpdate(ydoc) }
