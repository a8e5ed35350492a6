// What every editor page shares: the stock provider on the document the page's URL names
// (?server=ws://...&doc=...), and window.page, through which the tests read the editor's
// own Yjs document (state: base64 of Y.encodeStateAsUpdate) and its own view (text).
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'

export function connect () {
  const params = new URLSearchParams(location.search)
  const ydoc = new Y.Doc()
  const provider = new WebsocketProvider(params.get('server'), params.get('doc'), ydoc)
  window.page = { ydoc, provider, synced: false, errors: [] }
  provider.on('sync', (synced) => { window.page.synced = synced })
  window.addEventListener('error', (event) => window.page.errors.push(String(event.message)))
  return { ydoc, provider }
}

export function expose (fields) {
  Object.assign(window.page, fields, {
    state () {
      const update = Y.encodeStateAsUpdate(window.page.ydoc)
      let binary = ''
      for (const byte of update) binary += String.fromCharCode(byte)
      return btoa(binary)
    }
  })
}
