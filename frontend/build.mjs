// Builds the editor into ../collab/static, where the Python package serves it from
// (or into the directory given as the first argument). The output is committed; the
// test command rebuilds it from the lockfile elsewhere and fails if it differs.
import { build } from 'esbuild'
import { copyFile, mkdir, rm } from 'node:fs/promises'
import { resolve } from 'node:path'

const out = resolve(process.argv[2] ?? new URL('../collab/static/', import.meta.url).pathname) + '/'

await rm(out, { recursive: true, force: true })
await mkdir(out, { recursive: true })
await build({
  entryPoints: ['src/editor.js', 'src/start.js', 'src/style.css'],
  outdir: out,
  bundle: true,
  minify: true,
  format: 'esm',
  target: ['es2020'],
  legalComments: 'eof',
  charset: 'utf8',
  logLevel: 'warning'
})
for (const page of ['index.html', 'editor.html']) {
  await copyFile(`src/${page}`, `${out}${page}`)
}
