// The start page: open or create a document by name, or pick a recent one.
import { editorPath, recentDocs } from './identity.js'

const form = document.getElementById('open-form')
const input = document.getElementById('doc-name-input')
const error = document.getElementById('open-error')

function problem (name) {
  if (!name) return 'Give the document a name.'
  if (name !== name.trim()) return 'A name cannot start or end with a space.'
  if (/[\u0000-\u001f\u007f]/.test(name)) return 'A name cannot hold control characters.'
  if (name.split('/').some((part) => part === '.' || part === '..')) return 'A name cannot hold "." or ".." between slashes.'
  return null
}

form.addEventListener('submit', (event) => {
  event.preventDefault()
  const name = input.value.replace(/^\/+/, '')
  const message = problem(name)
  error.hidden = message === null
  error.textContent = message ?? ''
  if (message === null) window.location.assign(editorPath(name))
})

const recent = recentDocs()
const list = document.getElementById('recent')
document.getElementById('recent-empty').hidden = recent.length > 0
const when = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' })
for (const item of recent) {
  const li = document.createElement('li')
  const link = document.createElement('a')
  link.href = editorPath(item.name)
  link.textContent = item.name
  const time = document.createElement('time')
  time.dateTime = new Date(item.openedAt).toISOString()
  time.textContent = when.format(item.openedAt)
  li.append(link, time)
  list.append(li)
}
