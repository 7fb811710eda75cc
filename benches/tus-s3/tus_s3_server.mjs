// Peer tus 1.0 server on S3 for benches/s3.sh: @tus/server + @tus/s3-store (the tus
// organisation's Node.js server and its S3 backend), plain HTTP on 127.0.0.1.
//
//   node tus_s3_server.mjs PORT ENDPOINT BUCKET
//
// Env: S3_KEY, S3_SECRET (the store's credentials), PART_SIZE (bytes, default 8 MiB: the
// same part size as xferd's in the bench), MAX_PARTS (maxConcurrentPartUploads; unset =
// the store's default, 60). Path-style addressing (forcePathStyle), region us-east-1.
// Uploads land in BUCKET as the object named by the upload id (plus "<id>.info").
// GET /health -> 200 so the bench can wait for it. Prints "listening 127.0.0.1:PORT".
import http from 'node:http'
import { Server } from '@tus/server'
import { S3Store } from '@tus/s3-store'

const port = Number(process.argv[2])
const endpoint = process.argv[3]
const bucket = process.argv[4]
if (!Number.isInteger(port) || !endpoint || !bucket || !process.env.S3_KEY || !process.env.S3_SECRET) {
  console.error('usage: S3_KEY=.. S3_SECRET=.. node tus_s3_server.mjs PORT ENDPOINT BUCKET')
  process.exit(64)
}
const partSize = Number(process.env.PART_SIZE || 8 * 1024 * 1024)
const options = {
  partSize,
  s3ClientConfig: {
    bucket,
    endpoint,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: process.env.S3_KEY, secretAccessKey: process.env.S3_SECRET },
  },
}
if (process.env.MAX_PARTS) options.maxConcurrentPartUploads = Number(process.env.MAX_PARTS)

const tus = new Server({
  path: '/files',
  datastore: new S3Store(options),
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
