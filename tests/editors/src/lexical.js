// Lexical (vanilla, no React) rich text with @lexical/yjs, wired as @lexical/react's
// CollaborationPlugin wires it (shared/useYjsCollaboration.tsx, 0.52.0): createBinding on
// the XmlText root "root" of the doc in the binding's docMap, Lexical updates written to
// Yjs by syncLexicalUpdateToYjs (unless tagged SKIP_COLLAB_TAG), Yjs changes of other
// origins read back by syncYjsChangesToLexical, an empty paragraph bootstrapped on sync
// into an empty document (not undoable), cursors over the awareness, and undo/redo by
// the Y.UndoManager createUndoManager makes (Lexical's own history is not registered,
// as in collaboration). Bold is registerRichText's Ctrl+B (FORMAT_TEXT_COMMAND).
import {
  $createParagraphNode,
  $createRangeSelectionFromDom,
  $getRoot,
  $getSelection,
  $isRangeSelection,
  BLUR_COMMAND,
  COMMAND_PRIORITY_EDITOR,
  createEditor,
  FOCUS_COMMAND,
  getActiveElement,
  HISTORY_MERGE_TAG,
  mergeRegister,
  REDO_COMMAND,
  SKIP_COLLAB_TAG,
  UNDO_COMMAND
} from 'lexical'
import { HeadingNode, QuoteNode, registerRichText } from '@lexical/rich-text'
import {
  CONNECTED_COMMAND,
  createBinding,
  createUndoManager,
  initLocalState,
  setLocalStateFocus,
  syncCursorPositions,
  syncLexicalUpdateToYjs,
  syncYjsChangesToLexical
} from '@lexical/yjs'
import { UndoManager } from 'yjs'
import { connect, expose } from './common.js'

const { ydoc, provider } = connect()
const id = new URLSearchParams(location.search).get('doc')
const docMap = new Map([[id, ydoc]])
const name = `user ${ydoc.clientID}`
const color = '#d33'

const rootElement = document.querySelector('#editor')
rootElement.contentEditable = 'true'
const editor = createEditor({
  namespace: 'collab-restore',
  nodes: [HeadingNode, QuoteNode],
  onError: (error) => window.page.errors.push(String(error && error.stack ? error.stack : error))
})
editor.setRootElement(rootElement)

const binding = createBinding(editor, provider, id, ydoc, docMap)
const cursors = document.createElement('div')
document.body.appendChild(cursors)
binding.cursorsContainer = cursors
const sharedRoot = binding.root.getSharedType()
const undoManager = createUndoManager(binding, sharedRoot)
// Published where @lexical/react publishes it (COLLAB_UNDO_MANAGER), for the tests to
// close an undo step (stopCapturing) and to count the steps, as Lexical's e2e tests do.
editor[Symbol.for('@lexical/yjs/UndoManager')] = undoManager

function bootstrap () {
  // useYjsCollaboration's onBootstrap and bootstrapEditor: not a user edit, so not undone.
  const { root } = binding
  if (!(root.isEmpty() && root._xmlText._length === 0)) return
  binding.isBootstrapping = true
  try {
    editor.update(() => {
      const lexicalRoot = $getRoot()
      if (lexicalRoot.isEmpty()) {
        const paragraph = $createParagraphNode()
        lexicalRoot.append(paragraph)
        if ($getSelection() !== null || getActiveElement(rootElement) === rootElement) {
          paragraph.select()
        }
      }
    }, { onUpdate: () => { binding.isBootstrapping = false }, tag: HISTORY_MERGE_TAG })
  } finally {
    queueMicrotask(() => { binding.isBootstrapping = false })
  }
}

mergeRegister(
  registerRichText(editor),
  editor.registerUpdateListener(({
    prevEditorState, editorState, dirtyLeaves, dirtyElements, normalizedNodes, tags
  }) => {
    if (!tags.has(SKIP_COLLAB_TAG)) {
      syncLexicalUpdateToYjs(binding, provider, prevEditorState, editorState,
        dirtyElements, dirtyLeaves, normalizedNodes, tags)
    }
  }),
  editor.registerCommand(UNDO_COMMAND, () => { undoManager.undo(); return true },
    COMMAND_PRIORITY_EDITOR),
  editor.registerCommand(REDO_COMMAND, () => { undoManager.redo(); return true },
    COMMAND_PRIORITY_EDITOR),
  editor.registerCommand(FOCUS_COMMAND, () => {
    setLocalStateFocus(provider, name, color, true, {})
    return false
  }, COMMAND_PRIORITY_EDITOR),
  editor.registerCommand(BLUR_COMMAND, () => {
    setLocalStateFocus(provider, name, color, false, {})
    return false
  }, COMMAND_PRIORITY_EDITOR)
)
sharedRoot.observeDeep((events, transaction) => {
  if (transaction.origin !== binding) {
    syncYjsChangesToLexical(binding, provider, events,
      transaction.origin instanceof UndoManager, syncCursorPositions)
  }
})
provider.awareness.on('update', () => syncCursorPositions(binding, provider))
initLocalState(provider, name, color, getActiveElement(rootElement) === rootElement, {})
provider.on('status', ({ status }) => editor.dispatchCommand(CONNECTED_COMMAND, status === 'connected'))
provider.on('sync', (synced) => { if (synced) bootstrap() })
if (provider.synced) bootstrap()

expose({
  editor,
  text: () => editor.getEditorState().read(
    () => $getRoot().getChildren().map((node) => node.getTextContent()).join('\n')),
  // Whether Lexical's selection is the browser's: Lexical reads the DOM selection on
  // `selectionchange`, and a key it handles on keydown (Enter, Backspace, Ctrl+B) acts
  // on the selection it last read; the tests wait for this after moving the caret.
  selectionSettled: () => editor.read(() => {
    const selection = $getSelection()
    const dom = $createRangeSelectionFromDom(window.getSelection(), editor)
    return $isRangeSelection(selection) && dom !== null &&
      selection.anchor.is(dom.anchor) && selection.focus.is(dom.focus)
  })
})
