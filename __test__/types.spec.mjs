// index.d.ts / index.d.mts match the code users write: the seed example and node-redlock's
// documented usage type-check with --strict, wrong argument types do not; the package
// imported by name (through package.json "exports", as from node_modules) type-checks as
// ESM (default and named imports) under nodenext and bundler resolution, and as CommonJS.
import { execFile } from 'node:child_process'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

import test from 'ava'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const nodenext = ['--module', 'nodenext', '--moduleResolution', 'nodenext']
const bundler = ['--module', 'esnext', '--moduleResolution', 'bundler']

function tsc(options, ...files) {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [path.join(root, 'node_modules/typescript/bin/tsc'), '--noEmit', '--strict', '--skipLibCheck', '--target', 'es2022',
        ...options, '--types', 'node', ...files],
      { cwd: root },
      (error, stdout) => resolve({ code: error ? error.code : 0, stdout }),
    )
  })
}

test('index.d.ts accepts the seed example and refuses acquireLock(1, "x"), misspelt settings and options the constructors refuse', async (t) => {
  const { code, stdout } = await tsc(nodenext, '__test__/fixtures/seed-example.ts', '__test__/fixtures/bad-args.ts')
  const errors = stdout.split('\n').filter((l) => l.includes('error TS'))
  t.is(code, 2, stdout)
  t.deepEqual(errors, [
    "__test__/fixtures/bad-args.ts(7,26): error TS2345: Argument of type 'number' is not assignable to parameter of type 'string'.",
    "__test__/fixtures/bad-args.ts(8,37): error TS2561: Object literal may only specify known properties, but 'retryCnt' does not exist in type 'CallSettings'. Did you mean to write 'retryCount'?",
    "__test__/fixtures/bad-args.ts(9,18): error TS2339: Property 'memoryKeys' does not exist on type 'Redis'.",
    `__test__/fixtures/bad-args.ts(10,35): error TS2353: Object literal may only specify known properties, and 'signal' does not exist in type 'Partial<Omit<Settings, "signal">>'.`,
    "__test__/fixtures/bad-args.ts(11,28): error TS2561: Object literal may only specify known properties, but 'sentinels' does not exist in type 'ClusterOptions'. Did you mean to write 'sentinelTLS'?",
    "__test__/fixtures/bad-args.ts(12,39): error TS2322: Type 'string' is not assignable to type 'undefined'.",
  ])
})

test('ESM default and named imports, IRedisClient[], ioredis Cluster, using(signal, lock), reasons: nodenext (and CommonJS)', async (t) => {
  const { code, stdout } = await tsc(nodenext, '__test__/fixtures/esm-usage.mts', '__test__/fixtures/cjs-usage.cts')
  t.is(code, 0, stdout)
})

test('ESM default and named imports type-check under bundler resolution', async (t) => {
  const { code, stdout } = await tsc(bundler, '__test__/fixtures/esm-usage.mts')
  t.is(code, 0, stdout)
})
