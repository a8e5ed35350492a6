// Bundles each editor page of src/ (one stock editor over the stock y-websocket provider)
// into dist/, with an HTML page of its own: dist/<name>.html loads dist/<name>.js.
// tests/editor_pages.py serves dist/ and opens the pages in Chromium.
import { build } from 'esbuild'
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs'

const names = readdirSync('src')
  .filter((f) => f.endsWith('.js') && f !== 'common.js')
  .map((f) => f.slice(0, -3))
mkdirSync('dist', { recursive: true })
for (const name of names) {
  await build({
    entryPoints: [`src/${name}.js`],
    bundle: true,
    format: 'iife',
    target: 'es2022',
    outfile: `dist/${name}.js`,
    logLevel: 'warning'
  })
  writeFileSync(`dist/${name}.html`, `<!doctype html>
<meta charset="utf-8"><title>${name}</title>
<div id="editor" style="min-height: 200px"></div>
<script src="${name}.js"></script>
`)
}
