// PUT a file over HTTP/2 with Node's built-in http2 client (used by tests/transport_limits.rs).
// Usage: node h2_put.js URL FILE. Prints the response status and its xferd-error header
// (empty when there is none); exits 0 once a status was
// seen and the stream closed, 1 if the stream closed without one, 2 on a session error.
'use strict';
const http2 = require('http2');
const fs = require('fs');
const [url, file] = process.argv.slice(2);
const u = new URL(url);
const session = http2.connect(u.origin, { rejectUnauthorized: false });
session.on('error', (e) => { console.error('session error:', e.message); process.exit(2); });
const size = fs.statSync(file).size;
const req = session.request({ ':method': 'PUT', ':path': u.pathname + u.search, 'content-length': size });
let status = 0;
let code = '';
req.on('response', (h) => { status = h[':status']; code = h['xferd-error'] || ''; });
req.on('data', () => {});
req.on('error', (e) => console.error('stream error:', e.code || e.message));
req.on('close', () => {
  console.error('stream closed, RST_STREAM code', req.rstCode);
  if (status) console.log(`${status} ${code}`);
  session.close();
  process.exit(status ? 0 : 1);
});
fs.createReadStream(file).pipe(req);
