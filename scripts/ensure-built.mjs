// Builds the native addon (release) when it is missing or older than the Rust sources.
import { execSync } from 'node:child_process'
import { readdirSync, statSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')

function newest(p) {
  const st = statSync(p)
  if (!st.isDirectory()) return st.mtimeMs
  return Math.max(0, ...readdirSync(p).map((f) => newest(path.join(p, f))))
}

const addons = readdirSync(root).filter((f) => /^redlock-rs\..+\.node$/.test(f))
const built = Math.max(0, ...addons.map((f) => statSync(path.join(root, f)).mtimeMs))
const sources = Math.max(...['src', 'Cargo.toml', 'Cargo.lock', 'build.rs'].map((f) => newest(path.join(root, f))))
if (addons.length === 0 || built < sources) {
  console.log(addons.length === 0 ? 'Building the native addon…' : 'Rust sources changed: rebuilding the native addon…')
  execSync('npm run build', { cwd: root, stdio: 'inherit' })
}
