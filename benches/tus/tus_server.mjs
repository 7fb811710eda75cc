// Peer tus 1.0 server for benches/tus.sh: @tus/server + @tus/file-store (the tus
// organisation's Node.js implementation), plain HTTP on 127.0.0.1.
//
//   node tus_server.mjs PORT DIRECTORY
//
// Serves the tus endpoint at /files/ (uploads land in DIRECTORY, named by upload id) and
// GET /health -> 200 so the bench can wait for it. Prints "listening 127.0.0.1:PORT".
import http from 'node:http'
import { Server } from '@tus/server'
import { FileStore } from '@tus/file-store'

const port = Number(process.argv[2])
const directory = process.argv[3]
if (!Number.isInteger(port) || !directory) {
  console.error('usage: node tus_server.mjs PORT DIRECTORY')
  process.exit(64)
}

const tus = new Server({
  path: '/files',
  datastore: new FileStore({ directory }),
  maxSize: 4 * 1024 * 1024 * 1024,
})

const server = http.createServer((req, res) => {
  if (req.url === '/health') {
    res.writeHead(200, { 'content-type': 'text/plain' })
    res.end('ok')
    return
  }
  tus.handle(req, res)
})
server.listen(port, '127.0.0.1', () => console.log(`listening 127.0.0.1:${port}`))
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => server.close(() => process.exit(0)))
}
