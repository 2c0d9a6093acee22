// Types of redlock-rs for `import` (ESM): the same declarations as index.d.ts, with
// `Redlock` as the default export, as index.mjs has it.
import { Redlock } from './index.js'

export * from './index.js'
export default Redlock
