// The chaos run is heavy (6 worker processes, 5 lock nodes, a nemesis): `npm test` runs
// it on its own, after the other test files, so that their timings are not disturbed.
export default {
  files: ['__test__/chaos.spec.mjs'],
  timeout: '300s',
  workerThreads: false,
  concurrency: 1,
}
