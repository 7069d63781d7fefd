// The ES module entry: the very module `require('numballoc')` gives (one copy of the native
// state, whichever way it is loaded). Its names come from index.js, which lists each one so
// that Node's ESM loader can see them; the default export is the CommonJS module itself.
export * from './index.js'
export { default } from './index.js'
