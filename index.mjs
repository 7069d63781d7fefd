// The ES module entry: the very module `require('numballoc')` gives (one copy of the native
// state, whichever way it is loaded), re-exported by name and as the default export.
import numballoc from './index.js'

export const {
  loadShared,
  destroyShared,
  inspectShared,
  listShared,
  reclaimShared,
  SharedMemory,
  ConcurrentBitmap,
  MAX_SIZE,
  Lease,
  PortPool,
  getPort,
  getPortSync,
  releasePort,
  portNumbers,
} = numballoc
export default numballoc
