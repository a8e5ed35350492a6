// TipTap over the stock @hocuspocus/provider, as TipTap's collaboration docs set it up:
// StarterKit with its own undo off, Collaboration on the Y.Doc's "default" fragment, the
// provider on the server's base URL naming the document (?server=ws://...&doc=...).
import { Editor } from '@tiptap/core'
import StarterKit from '@tiptap/starter-kit'
import Collaboration from '@tiptap/extension-collaboration'
import { HocuspocusProvider } from '@hocuspocus/provider'
import * as Y from 'yjs'

const params = new URLSearchParams(location.search)
const ydoc = new Y.Doc()
const provider = new HocuspocusProvider({ url: params.get('server'), name: params.get('doc'), document: ydoc })
window.page = { ydoc, provider, synced: false, errors: [] }
provider.on('synced', () => { window.page.synced = true })
window.addEventListener('error', (event) => window.page.errors.push(String(event.message)))
const editor = new Editor({
  element: document.querySelector('#editor'),
  extensions: [
    StarterKit.configure({ undoRedo: false }),
    Collaboration.configure({ document: ydoc, field: 'default' })
  ]
})
Object.assign(window.page, { editor, text: () => editor.getText(), json: () => editor.getJSON() })
