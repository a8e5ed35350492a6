// Quill 2 with y-quill, set up as y-quill's README and the Yjs Quill demo do: Y.Text
// "quill", remote cursors by quill-cursors, and Quill's own history module with
// userOnly: true (the demo's "local undo shouldn't undo changes from remote users"),
// bound to Mod-z / Mod-Shift-z. That history is no Y.UndoManager: it keeps inverse
// deltas by index and transforms them through every remote change.
// Quill's core stylesheet is loaded as every Quill app loads it: without its
// `white-space: pre-wrap`, Chromium types a space at the end of a line as U+00A0.
import Quill from 'quill'
import coreCss from 'quill/dist/quill.core.css' with { type: 'text' }
import QuillCursors from 'quill-cursors'
import { QuillBinding } from 'y-quill'
import { connect, expose } from './common.js'

Quill.register('modules/cursors', QuillCursors)
document.head.appendChild(document.createElement('style')).textContent = coreCss

const { ydoc, provider } = connect()
const ytext = ydoc.getText('quill')
const quill = new Quill(document.querySelector('#editor'), {
  modules: {
    cursors: true,
    history: { userOnly: true }
  },
  placeholder: 'Start collaborating...'
})
const binding = new QuillBinding(ytext, quill, provider.awareness)
expose({ quill, binding, text: () => quill.getText(), delta: () => quill.getContents() })
