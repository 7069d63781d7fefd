// A TypeScript consumer under --module nodenext, compiled to an ES module and run: named imports
// from the package must exist at run time, not only in the types.
import { ConcurrentBitmap, destroyShared, getPort, releasePort, portNumbers, type Lease } from 'numballoc'
import numballoc from 'numballoc'

const name = process.argv[2]
const ids = ConcurrentBitmap.open(name, { capacity: 4, policy: 'lowest' })
const lease: Lease = ids.acquire()
const first: number = lease.value
lease.release()
const port: number = await getPort({ port: portNumbers(1, 65535) })
releasePort(port)
ids.close()
console.log(JSON.stringify({ first, port: port > 0, sameModule: numballoc.ConcurrentBitmap === ConcurrentBitmap, destroyed: destroyShared(name) }))
