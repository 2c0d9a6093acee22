// Hostile input: thousands of calls with random values; no crash, no hang, only
// TypeError/RangeError or clean rejections, and the process exits by itself after.
import { execFile } from 'node:child_process'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

import test from 'ava'

import { useServers } from './helpers.mjs'

const fuzz = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'fuzz.mjs')
const servers = useServers(test, 1)

test('4000 random calls: only TypeError/RangeError or clean rejections, then a clean exit', async (t) => {
  const { code, out, err } = await new Promise((resolve) => {
    execFile(process.execPath, [fuzz, String(servers[0].port), '4000', '20261126'], { timeout: 150_000 }, (e, out, err) =>
      resolve({ code: e ? (e.code ?? e.signal) : 0, out, err }),
    )
  })
  t.is(code, 0, `the fuzz process exited by itself: ${err.slice(-2000)}`)
  const summary = JSON.parse(out)
  t.log(summary)
  t.is(summary.calls, 4000)
  t.deepEqual(summary.unexpected, [])
  t.true(summary.syncTypeOrRange > 500, 'bad input was refused synchronously')
  t.true(summary.rejected + summary.resolved > 500, 'promises settled')
})
