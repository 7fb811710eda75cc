// tus-js-client (the tus organisation's JavaScript client) uploading one file through two
// servers, for interop/cluster/run.sh. All the protocol work is tus-js-client's.
//
//   node tus_split.mjs ENDPOINT_A BASE_B FILE --split-at N [--chunk-size N]
//
// Starts the upload at ENDPOINT_A (creation URL: for xferd a signed URL of the target path)
// and aborts it (abort(false): the upload stays on the server) once at least N bytes are
// acknowledged; then a second Upload with uploadUrl = the same upload at BASE_B
// (scheme://host:port of the other instance) asks B for the offset (HEAD) and sends the
// rest there. tus-js-client comes from interop/resumable/node (its pinned lock).
// TLS: Node verifies the server against NODE_EXTRA_CA_CERTS.
//
// Prints one JSON object: {ok, url_a, url_b, offset_a, head_offset_b, offset, size,
// requests: ["SERVER METHOD url -> status", ...], error, status, body}. Exit 0 on success.
import fs from 'node:fs'
import path from 'node:path'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'

const here = path.dirname(fileURLToPath(import.meta.url))
const require = createRequire(path.join(here, '../resumable/node/package.json'))
const { Upload } = require('tus-js-client')

const [endpointA, baseB, file, ...rest] = process.argv.slice(2)
let splitAt = NaN
let chunkSize = 4 * 1024 * 1024
for (let i = 0; i < rest.length; i += 2) {
  if (rest[i] === '--split-at') splitAt = Number(rest[i + 1])
  else if (rest[i] === '--chunk-size') chunkSize = Number(rest[i + 1])
  else { console.error(`unknown argument ${rest[i]}`); process.exit(64) }
}
if (!endpointA || !baseB || !file || !Number.isFinite(splitAt)) {
  console.error('usage: node tus_split.mjs ENDPOINT_A BASE_B FILE --split-at N [--chunk-size N]')
  process.exit(64)
}
const size = fs.statSync(file).size
const out = { ok: false, url_a: null, url_b: null, offset_a: 0, head_offset_b: null, offset: null, size, requests: [] }

function emit(code) {
  process.stdout.write(`${JSON.stringify(out)}\n`, () => process.exit(code))
}

function options(server, extra) {
  return {
    chunkSize,
    metadata: { filename: path.basename(file) },
    retryDelays: [], // no silent retries: a failure must show
    onAfterResponse(req, res) {
      const m = req.getMethod()
      if (server === 'B' && m === 'HEAD' && out.head_offset_b === null) {
        out.head_offset_b = Number(res.getHeader('Upload-Offset'))
      }
      if (out.requests.length < 60) out.requests.push(`${server} ${m} ${req.getURL()} -> ${res.getStatus()}`)
    },
    onError(err) {
      out.error = `${server}: ${String(err && err.message ? err.message : err)}`
      if (err && err.originalResponse) {
        out.status = err.originalResponse.getStatus()
        out.body = String(err.originalResponse.getBody() || '').slice(0, 400)
      }
      emit(1)
    },
    ...extra,
  }
}

function second() {
  const a = new URL(out.url_a)
  const b = new URL(baseB)
  a.protocol = b.protocol
  a.host = b.host
  out.url_b = a.toString()
  const up = new Upload(fs.createReadStream(file), options('B', {
    uploadUrl: out.url_b,
    onChunkComplete(_c, accepted) { out.offset = accepted },
    onSuccess() {
      out.offset = size
      out.ok = true
      emit(0)
    },
  }))
  up.start()
}

const first = new Upload(fs.createReadStream(file), options('A', {
  endpoint: endpointA,
  onChunkComplete(_c, accepted) {
    out.offset_a = accepted
    if (accepted >= splitAt && accepted < size && !out.url_a) {
      out.url_a = first.url
      first.abort(false).then(second)
    }
  },
  onSuccess() {
    out.url_a = first.url
    out.error = 'the upload completed on A before the split point'
    emit(1)
  },
}))
first.start()
