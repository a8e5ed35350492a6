// CodeMirror 6 with y-codemirror.next: Y.Text "codemirror", undo by its own Y.UndoManager
// (yCollab's default, bound to Mod-z / Mod-y / Mod-Shift-z).
import { EditorState } from '@codemirror/state'
import { EditorView, keymap } from '@codemirror/view'
import { yCollab, yUndoManagerKeymap } from 'y-codemirror.next'
import { connect, expose } from './common.js'

const { ydoc, provider } = connect()
const ytext = ydoc.getText('codemirror')
const view = new EditorView({
  state: EditorState.create({
    doc: ytext.toString(),
    extensions: [keymap.of(yUndoManagerKeymap), yCollab(ytext, provider.awareness)]
  }),
  parent: document.querySelector('#editor')
})
expose({ view, text: () => view.state.doc.toString() })
