// A tus 1.0 endpoint that stores nothing, for benches/tus.sh: it measures the client's
// own ceiling (what tuspy or tus-js-client can send on this machine with this chunk
// size), the limit every server's figure sits under.
//
//   node sink.mjs PORT
//
// POST /files/ -> 201 Location /files/<n>; PATCH reads and discards the body -> 204 with
// Upload-Offset = Upload-Offset + bytes read; GET /health -> 200. Plain HTTP/1.1 on 127.0.0.1.
import http from 'node:http'

const port = Number(process.argv[2])
if (!Number.isInteger(port)) {
  console.error('usage: node sink.mjs PORT')
  process.exit(64)
}
let next = 0
const server = http.createServer((req, res) => {
  const tus = { 'Tus-Resumable': '1.0.0' }
  if (req.url === '/health') {
    res.writeHead(200).end('ok')
  } else if (req.method === 'POST') {
    req.resume()
    req.on('end', () => res.writeHead(201, { ...tus, Location: `/files/${next++}` }).end())
  } else if (req.method === 'PATCH') {
    const offset = Number(req.headers['upload-offset'])
    let got = 0
    req.on('data', (c) => { got += c.length })
    req.on('end', () => res.writeHead(204, { ...tus, 'Upload-Offset': String(offset + got) }).end())
  } else {
    req.resume()
    res.writeHead(405, tus).end()
  }
})
server.listen(port, '127.0.0.1', () => console.log(`listening 127.0.0.1:${port}`))
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => server.close(() => process.exit(0)))
}
