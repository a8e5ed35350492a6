// Fails if the committed bundle in ../collab/static is not what the sources and the
// lockfile build: rebuilds into a temporary directory and compares every file.
import { execFileSync } from 'node:child_process'
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

const committed = new URL('../collab/static/', import.meta.url).pathname
const fresh = await mkdtemp(join(tmpdir(), 'collab-static-'))
try {
  execFileSync(process.execPath, ['build.mjs', fresh], { stdio: 'inherit' })
  const names = [...new Set([...await readdir(committed), ...await readdir(fresh)])].sort()
  const differing = []
  for (const name of names) {
    const [a, b] = await Promise.all([committed, fresh].map((dir) => readFile(join(dir, name)).catch(() => null)))
    if (a === null || b === null || !a.equals(b)) differing.push(name)
  }
  if (differing.length) {
    console.error(`collab/static is stale (${differing.join(', ')}): run \`npm run build --prefix frontend\` and commit it`)
    process.exit(1)
  }
  console.log(`collab/static matches a fresh build (${names.length} files)`)
} finally {
  await rm(fresh, { recursive: true, force: true })
}
