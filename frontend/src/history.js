// The History panel: the document's versions, naming the current one, a read-only
// preview of any version, and restoring it. Talks to the REST API under /api/docs; a
// restore reaches every open editor through the ordinary sync, not through this panel.
import { Editor } from '@tiptap/core'
import StarterKit from '@tiptap/starter-kit'
import Collaboration from '@tiptap/extension-collaboration'
import * as Y from 'yjs'
import { mountBase } from './identity.js'
import { authHeaders } from './session.js'

// Long enough for a big document on a slow link; short enough that nothing hangs.
const TIMEOUT_MS = 20_000
const KINDS = { auto: 'Automatic', named: 'Named', 'pre-restore': 'Before a restore' }

class ApiError extends Error {
  constructor (status, message) {
    super(message)
    this.status = status
  }
}

async function request (url, options = {}) {
  let response
  try {
    response = await fetch(url, {
      ...options,
      headers: authHeaders(options.headers),
      signal: AbortSignal.timeout(TIMEOUT_MS)
    })
  } catch (error) {
    const timedOut = error.name === 'TimeoutError'
    throw new ApiError(0, timedOut ? 'the server did not answer in time' : 'the server cannot be reached')
  }
  if (!response.ok) throw new ApiError(response.status, await errorMessage(response))
  return response
}

async function errorMessage (response) {
  try {
    return (await response.json()).error.message
  } catch {
    return `${response.status} ${response.statusText}`.trim()
  }
}

function startOfDay (date) {
  return new Date(date.getFullYear(), date.getMonth(), date.getDate()).getTime()
}

// "Today 14:02", "Yesterday 09:15", "3 Mar 11:40", or with the year when not this one.
export function readableTime (iso, now = new Date()) {
  const date = new Date(iso)
  const time = date.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' })
  const days = Math.round((startOfDay(now) - startOfDay(date)) / 86_400_000)
  if (days === 0) return `Today ${time}`
  if (days === 1) return `Yesterday ${time}`
  const year = date.getFullYear() === now.getFullYear() ? undefined : 'numeric'
  return `${date.toLocaleDateString(undefined, { day: 'numeric', month: 'short', year })} ${time}`
}

function element (tag, className, text) {
  const el = document.createElement(tag)
  if (className) el.className = className
  if (text !== undefined) el.textContent = text
  return el
}

function versionButton (version) {
  const button = element('button', 'version')
  button.type = 'button'
  button.dataset.versionId = String(version.id)
  button.dataset.kind = version.kind
  const kind = KINDS[version.kind] ?? version.kind
  const title = element('span', 'version-title', version.label ?? kind)
  const when = element('time', null, readableTime(version.created_at))
  when.dateTime = version.created_at
  when.title = new Date(version.created_at).toLocaleString()
  const meta = element('span', 'version-meta')
  meta.append(when, ` · ${version.label ? `${kind} · ` : ''}#${version.id}`)
  button.append(title, meta)
  return button
}

export function setupHistory (docName) {
  const base = `${mountBase}/api/docs/${encodeURIComponent(docName)}/versions`
  const $ = (id) => document.getElementById(id)
  const toggle = $('history-toggle')
  const panel = $('history')
  const heading = $('history-title')
  const list = $('versions')
  const listStatus = $('history-status')
  const notice = $('history-notice')
  const form = $('version-form')
  const labelInput = $('version-label')
  const previewBox = $('preview')
  const previewTitle = $('preview-title')
  const previewMeta = $('preview-meta')
  const previewStatus = $('preview-status')
  const previewContent = $('preview-content')
  const restoreButton = $('preview-restore')

  let versions = []
  let listRequest = 0 // only the newest list request may render
  let preview = null // { version, editor, ydoc } while a preview is open
  let previewRequest = 0

  function say (el, message, isError = false) {
    el.textContent = message
    el.classList.toggle('error', isError)
    el.hidden = !message
  }

  // --- the list

  async function refresh () {
    const mine = ++listRequest
    list.setAttribute('aria-busy', 'true')
    if (!versions.length) say(listStatus, 'Loading versions…')
    try {
      const response = await request(base)
      if (mine === listRequest) render((await response.json()).versions)
    } catch (error) {
      if (mine !== listRequest) return
      // Nothing stored yet means no versions, not a failure.
      if (error.status === 404) render([])
      else say(listStatus, `Could not load the versions: ${error.message}`, true)
    } finally {
      if (mine === listRequest) list.removeAttribute('aria-busy')
    }
  }

  function render (newest) {
    const focused = document.activeElement?.closest?.('#versions [data-version-id]')?.dataset.versionId
    versions = newest
    say(listStatus, versions.length ? '' : 'No versions yet')
    list.replaceChildren(...versions.map((version) => {
      const li = element('li')
      li.append(versionButton(version))
      return li
    }))
    markCurrent()
    // Re-rendering replaces the buttons: keep keyboard users where they were.
    if (focused) buttonFor(focused)?.focus()
  }

  function buttonFor (id) {
    return list.querySelector(`[data-version-id="${CSS.escape(String(id))}"]`)
  }

  function markCurrent () {
    for (const button of list.querySelectorAll('[data-version-id]')) {
      const current = preview && button.dataset.versionId === String(preview.version.id)
      if (current) button.setAttribute('aria-current', 'true')
      else button.removeAttribute('aria-current')
    }
  }

  list.addEventListener('click', (event) => {
    const button = event.target.closest('[data-version-id]')
    const version = button && versions.find((v) => String(v.id) === button.dataset.versionId)
    if (version) showPreview(version)
  })

  // --- naming the current state

  form.addEventListener('submit', async (event) => {
    event.preventDefault()
    const submit = form.querySelector('button[type="submit"]')
    submit.disabled = true
    say(notice, 'Saving…')
    try {
      const response = await request(base, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ label: labelInput.value })
      })
      const version = await response.json()
      labelInput.value = ''
      say(notice, `Saved “${version.label}”.`)
      await refresh()
    } catch (error) {
      const message = error.status === 404 ? 'there is nothing to save yet' : error.message
      say(notice, `Could not name this version: ${message}`, true)
    } finally {
      submit.disabled = false
    }
  })

  // --- the read-only preview

  async function showPreview (version) {
    closePreview()
    const mine = ++previewRequest
    preview = { version, editor: null, ydoc: null }
    markCurrent()
    previewBox.hidden = false
    previewTitle.textContent = `Version ${version.id} — read only`
    previewMeta.textContent = `${version.label ?? KINDS[version.kind] ?? version.kind} · ${readableTime(version.created_at)}`
    restoreButton.disabled = true
    say(previewStatus, `Loading version ${version.id}…`)
    previewTitle.focus()
    let state
    try {
      const response = await request(`${base}/${version.id}?format=update`)
      state = new Uint8Array(await response.arrayBuffer())
    } catch (error) {
      if (mine === previewRequest) say(previewStatus, `Could not load this version: ${error.message}`, true)
      return
    }
    if (mine !== previewRequest) return
    // A doc of its own, never connected: nothing done here can reach the live document.
    const ydoc = new Y.Doc()
    Y.applyUpdate(ydoc, state)
    preview.ydoc = ydoc
    preview.editor = new Editor({
      element: previewContent,
      editable: false,
      extensions: [
        StarterKit.configure({ undoRedo: false, link: { openOnClick: false } }),
        Collaboration.configure({ document: ydoc, field: 'default' })
      ],
      editorProps: {
        attributes: { class: 'prose', 'aria-label': `Version ${version.id}, read only`, 'aria-readonly': 'true' }
      }
    })
    say(previewStatus, '')
    restoreButton.disabled = false
  }

  function closePreview () {
    previewRequest++
    if (!preview) return
    preview.editor?.destroy()
    preview.ydoc?.destroy()
    preview = null
    previewContent.replaceChildren()
    previewBox.hidden = true
    say(previewStatus, '')
    markCurrent()
  }

  function closePreviewAndReturn () {
    const id = preview?.version.id
    closePreview()
    ;(buttonFor(id) ?? heading).focus()
  }

  $('preview-close').addEventListener('click', closePreviewAndReturn)

  restoreButton.addEventListener('click', async () => {
    const { version } = preview
    const question = `Restore version ${version.id}? Everyone's copy of the document changes to it; ` +
      'the current state is kept as a version, so this can be undone.'
    if (!window.confirm(question)) return
    restoreButton.disabled = true
    say(previewStatus, 'Restoring…')
    try {
      const response = await request(`${base}/${version.id}/restore`, { method: 'POST' })
      const { pre_restore: before } = await response.json()
      closePreview()
      heading.focus()
      say(notice, `Restored version ${version.id}. To undo it, restore version ${before.id} (before a restore).`)
      await refresh()
    } catch (error) {
      // The preview may have been closed while the request ran.
      if (preview?.version === version) {
        say(previewStatus, `Could not restore: ${error.message}`, true)
        restoreButton.disabled = false
      } else {
        say(notice, `Could not restore version ${version.id}: ${error.message}`, true)
      }
    }
  })

  // --- opening and closing

  function open () {
    panel.hidden = false
    toggle.setAttribute('aria-expanded', 'true')
    document.body.classList.add('history-open')
    say(notice, '')
    heading.focus()
    refresh()
  }

  function close () {
    closePreview()
    panel.hidden = true
    toggle.setAttribute('aria-expanded', 'false')
    document.body.classList.remove('history-open')
    toggle.focus()
  }

  toggle.addEventListener('click', () => (panel.hidden ? open() : close()))
  $('history-close').addEventListener('click', close)

  document.addEventListener('keydown', (event) => {
    if (event.key !== 'Escape' || panel.hidden || event.defaultPrevented) return
    // Escape in the document being edited belongs to the editor.
    if (event.target.closest?.('#editor')) return
    event.preventDefault()
    if (preview) closePreviewAndReturn()
    else close()
  })

  return {
    // A reader may look at versions but neither name nor restore them.
    setReadOnly (readOnly) {
      form.hidden = readOnly
      restoreButton.hidden = readOnly
    }
  }
}
