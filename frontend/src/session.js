// The credential this page was opened with: an app that embeds collab with --auth token
// links to /d/<name>?token=<token>. It goes to the provider as the `token` query
// parameter and to the REST API as a Bearer header.

import { mountBase } from './identity.js'

const token = new URLSearchParams(window.location.search).get('token')

export function providerParams () {
  return token ? { token } : {}
}

export function authHeaders (headers = {}) {
  return token ? { ...headers, Authorization: `Bearer ${token}` } : headers
}

// What this page may do with its document: 'none', 'read', 'write' or 'admin'.
export async function permissionFor (docName) {
  try {
    const response = await fetch(`${mountBase}/api/docs/${encodeURIComponent(docName)}/access`, {
      headers: authHeaders(),
      signal: AbortSignal.timeout(10_000)
    })
    if (response.status === 401 || response.status === 403) return 'none'
    if (!response.ok) return 'write'
    return (await response.json()).permission
  } catch {
    return 'write' // unknown: the server still refuses what is not allowed, and says so
  }
}

export function canWrite (permission) {
  return permission === 'write' || permission === 'admin'
}
