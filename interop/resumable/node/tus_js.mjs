// tus-js-client (the tus organisation's JavaScript client) driven from the command line,
// for interop/resumable/run.sh (conformance) and benches/tus.sh (throughput). All the
// protocol work is tus-js-client's; this file only wires it up and reports what happened.
//
//   node tus_js.mjs upload ENDPOINT FILE [--parallel N] [--chunk-size N]
//        [--protocol tus-v1|ietf-draft-05] [--metadata k=v ...]
//   node tus_js.mjs abort ENDPOINT FILE --store URLS.json --abort-at FRACTION [--chunk-size N]
//   node tus_js.mjs resume ENDPOINT FILE --store URLS.json [--chunk-size N]
//
// ENDPOINT is the creation URL (for xferd a signed URL of the target path). "abort" starts
// an upload that keeps its URL in a FileUrlStorage, calls upload.abort() once at least
// FRACTION of the file was sent (mid-PATCH), and exits. "resume" is a new process that finds
// that upload with findPreviousUploads() and continues it with resumeFromPreviousUpload().
// protocol ietf-draft-05 is tus-js-client's IETF draft mode (Upload-Draft-Interop-Version: 6).
// TLS: Node verifies the server against NODE_EXTRA_CA_CERTS (set it to the server's cert).
//
// Prints one JSON object: {ok, url, offset, size, seconds, mb_per_s, head_offset,
// requests: [...first 40 "METHOD url -> status"], error}. Exit 0 on success.
import fs from 'node:fs'
import tus from 'tus-js-client'

const { Upload, FileUrlStorage } = tus

function parse(argv) {
  const [cmd, endpoint, file, ...rest] = argv
  const o = { cmd, endpoint, file, parallel: 1, chunkSize: Infinity, protocol: 'tus-v1', metadata: {} }
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i]
    const v = rest[i + 1]
    if (a === '--parallel') { o.parallel = Number(v); i++ }
    else if (a === '--chunk-size') { o.chunkSize = Number(v); i++ }
    else if (a === '--protocol') { o.protocol = v; i++ }
    else if (a === '--store') { o.store = v; i++ }
    else if (a === '--abort-at') { o.abortAt = Number(v); i++ }
    else if (a === '--metadata') { const [k, ...r] = v.split('='); o.metadata[k] = r.join('='); i++ }
    else { throw new Error(`unknown argument ${a}`) }
  }
  if (!['upload', 'abort', 'resume'].includes(cmd) || !endpoint || !file) {
    throw new Error('usage: tus_js.mjs upload|abort|resume ENDPOINT FILE [options]')
  }
  if (cmd !== 'upload' && !o.store) throw new Error(`${cmd} needs --store`)
  return o
}

function emit(out, code) {
  process.stdout.write(`${JSON.stringify(out)}\n`, () => process.exit(code))
}

const o = parse(process.argv.slice(2))
const size = fs.statSync(o.file).size
const out = { ok: false, url: null, offset: null, size, seconds: null, mb_per_s: null, requests: [] }
const t0 = process.hrtime.bigint()
const elapsed = () => Number(process.hrtime.bigint() - t0) / 1e9

const options = {
  endpoint: o.endpoint,
  chunkSize: o.chunkSize,
  parallelUploads: o.parallel,
  protocol: o.protocol,
  metadata: { filename: o.file.split('/').pop(), ...o.metadata },
  // No silent retries: a failure must show, not be papered over.
  retryDelays: [],
  onAfterResponse(req, res) {
    const m = req.getMethod()
    if (m === 'HEAD' && out.head_offset === undefined) {
      out.head_offset = Number(res.getHeader('Upload-Offset'))
    }
    if (out.requests.length < 40) out.requests.push(`${m} ${req.getURL()} -> ${res.getStatus()}`)
  },
}
if (o.store) {
  options.urlStorage = new FileUrlStorage(o.store)
  options.storeFingerprintForResuming = true
  options.removeFingerprintOnSuccess = false
}

const upload = new Upload(fs.createReadStream(o.file), {
  ...options,
  onError(err) {
    out.error = String(err && err.message ? err.message : err)
    if (err && err.originalResponse) {
      out.status = err.originalResponse.getStatus()
      out.body = String(err.originalResponse.getBody() || '').slice(0, 400)
    }
    out.url = upload.url
    emit(out, 1)
  },
  onChunkComplete(_chunk, accepted) {
    out.offset = accepted
  },
  onProgress(sent, total) {
    // Abort in the middle of a PATCH body: a client that goes away mid-request.
    if (o.cmd === 'abort' && !out.aborted_at && sent >= o.abortAt * total && sent < total) {
      out.url = upload.url
      out.aborted_at = sent
      out.acked_at_abort = out.offset || 0
      // abort(false): stop, keep the upload on the server and in the URL storage.
      upload.abort(false).then(() => { out.ok = true; emit(out, 0) })
    }
  },
  onSuccess() {
    const s = elapsed()
    out.url = upload.url
    out.offset = size
    out.seconds = Math.round(s * 1e4) / 1e4
    out.mb_per_s = Math.round(((size - (out.head_offset || 0)) / 1e6 / s) * 100) / 100
    out.ok = o.cmd !== 'abort'
    if (o.cmd === 'abort') out.error = 'the upload completed before it could be aborted'
    emit(out, out.ok ? 0 : 1)
  },
})

if (o.cmd === 'resume') {
  const previous = await upload.findPreviousUploads()
  out.previous = previous.length
  if (previous.length === 0) {
    out.error = 'findPreviousUploads() found nothing in the URL storage'
    emit(out, 1)
  } else {
    out.stored_url = previous[0].uploadUrl
    upload.resumeFromPreviousUpload(previous[0])
    upload.start()
  }
} else {
  upload.start()
}
