// Who this browser is (name and colour, remembered in localStorage) and which
// documents it opened recently.

const USER_KEY = 'collab.user'
const RECENT_KEY = 'collab.recent'
const RECENT_MAX = 12

// Colours readable as caret labels with white text.
const PALETTE = ['#1f6feb', '#d1242f', '#1a7f37', '#8250df', '#bc4c00', '#0a7e8c', '#bf3989', '#6e7781']
const ANIMALS = ['Otter', 'Heron', 'Lynx', 'Fox', 'Owl', 'Panda', 'Koala', 'Puffin', 'Ibex', 'Marten']

function pick (list) {
  return list[Math.floor(Math.random() * list.length)]
}

function read (key, fallback) {
  try {
    const value = JSON.parse(window.localStorage.getItem(key))
    return value ?? fallback
  } catch {
    return fallback
  }
}

function write (key, value) {
  try {
    window.localStorage.setItem(key, JSON.stringify(value))
  } catch {
    // Private mode or a full quota: the user just is not remembered.
  }
}

export function loadUser () {
  const stored = read(USER_KEY, {})
  const user = {
    name: typeof stored.name === 'string' && stored.name.trim() ? stored.name : `Anonymous ${pick(ANIMALS)}`,
    color: /^#[0-9a-f]{6}$/i.test(stored.color) ? stored.color : pick(PALETTE)
  }
  write(USER_KEY, user)
  return user
}

export function saveUser (user) {
  write(USER_KEY, user)
}

export function recentDocs () {
  const recent = read(RECENT_KEY, [])
  return Array.isArray(recent) ? recent.filter((item) => typeof item?.name === 'string') : []
}

export function rememberDoc (name) {
  const rest = recentDocs().filter((item) => item.name !== name)
  write(RECENT_KEY, [{ name, openedAt: Date.now() }, ...rest].slice(0, RECENT_MAX))
}

// The path a host app mounted collab under ('' at the root): every link, API call and
// room URL of these pages starts with it.
export const mountBase = document.querySelector('meta[name="collab-base"]')?.content ?? ''

// The editor's URL for a document name: each segment encoded, the slashes kept.
export function editorPath (name) {
  return mountBase + '/d/' + name.split('/').map(encodeURIComponent).join('/')
}
