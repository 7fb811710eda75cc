// Converse.js (npm converse.js, the browser XMPP client) sends a file through Prosody's
// mod_http_upload_external (XEP-0363, protocol v2) to xferd, in headless Chromium; called by
// test.js once over HTTP/3 and once over HTTP/2. Prosody (its own config, loopback ports,
// run as this user) serves XMPP over WebSocket; a small Node server here serves the
// Converse page. Checks: the file arrives on xferd's disk with its SHA-256, the chat shows
// the link, and xferd counted the browser's PUT on the mode's protocol and no other.
'use strict';
const fs = require('fs');
const path = require('path');
const http = require('http');
const net = require('net');
const { spawn, execFileSync } = require('child_process');

const DIST = path.join(__dirname, 'node_modules/converse.js/dist');
const TYPES = {
  '.js': 'text/javascript', '.css': 'text/css', '.json': 'application/json', '.html': 'text/html',
  '.wasm': 'application/wasm', '.svg': 'image/svg+xml', '.png': 'image/png', '.woff': 'font/woff',
  '.woff2': 'font/woff2', '.ttf': 'font/ttf', '.mp3': 'audio/mpeg', '.ogg': 'audio/ogg',
};

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); });
    s.on('error', reject);
  });
}

function listening(port) {
  return new Promise((resolve) => {
    const c = net.connect(port, '127.0.0.1', () => { c.destroy(); resolve(true); });
    c.on('error', () => resolve(false));
  });
}

// The Converse page and its assets from node_modules, on a loopback port.
function webServer(init) {
  const srv = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    let file = null;
    if (url.pathname === '/') file = null;
    else if (url.pathname === '/init.js') file = 'init';
    else if (url.pathname.startsWith('/dist/')) file = path.join(DIST, path.normalize(url.pathname.slice(6)));
    if (file && file !== 'init' && (!file.startsWith(DIST) || !fs.existsSync(file))) {
      res.writeHead(404).end();
      return;
    }
    if (file === 'init') {
      res.writeHead(200, { 'content-type': 'text/javascript' }).end(init);
    } else if (file) {
      res.writeHead(200, { 'content-type': TYPES[path.extname(file)] || 'application/octet-stream' });
      fs.createReadStream(file).pipe(res);
    } else {
      res.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><html><head>' +
        '<meta charset="utf-8"><title>Converse</title>' +
        '<link rel="stylesheet" href="/dist/converse.min.css">' +
        '<script type="module" src="/dist/converse.min.js"></script></head>' +
        '<body class="converse-fullscreen"><script type="module" src="/init.js"></script></body></html>');
    }
  });
  return new Promise((resolve) => srv.listen(0, '127.0.0.1', () => resolve(srv)));
}

async function startProsody(dir, c2s, httpPort, base, secret) {
  fs.mkdirSync(path.join(dir, 'data'), { recursive: true });
  fs.mkdirSync(path.join(dir, 'certs'), { recursive: true });
  const cfg = path.join(dir, 'prosody.cfg.lua');
  fs.writeFileSync(cfg, `-- test instance: loopback only, this user, no TLS
run_as_root = true
daemonize = false
pidfile = "${dir}/prosody.pid"
data_path = "${dir}/data"
certificates = "${dir}/certs"
plugin_paths = { "/usr/lib/prosody/modules" }
interfaces = { "127.0.0.1" }
local_interfaces = { "127.0.0.1" }
c2s_ports = { ${c2s} }
c2s_direct_tls_ports = { }
legacy_ssl_ports = { }
s2s_ports = { }
http_ports = { ${httpPort} }
http_interfaces = { "127.0.0.1" }
https_ports = { }
modules_enabled = { "roster", "saslauth", "disco", "ping", "websocket", "http" }
modules_disabled = { "s2s", "offline" }
authentication = "internal_hashed"
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
consider_websocket_secure = true
cross_domain_websocket = true
log = { debug = "${dir}/prosody.log" }

VirtualHost "localhost"

Component "upload.localhost" "http_upload_external"
    http_upload_external_base_url = "${base}"
    http_upload_external_secret = "${secret}"
    http_upload_external_protocol = "v2"
`);
  execFileSync('timeout', ['30', 'prosodyctl', '--config', cfg, 'register', 'alice', 'localhost', 'alicepass'],
    { stdio: 'ignore' });
  const log = fs.openSync(path.join(dir, 'stdout.log'), 'a');
  const child = spawn('prosody', ['--config', cfg, '-F'], { stdio: ['ignore', log, log] });
  fs.closeSync(log);
  for (let i = 0; i < 150; i++) {
    if (child.exitCode !== null) break;
    if (await listening(httpPort) && await listening(c2s)) return child;
    await new Promise((r) => setTimeout(r, 200));
  }
  child.kill('SIGKILL');
  throw new Error('prosody did not listen within 30 s (see ' + dir + '/prosody.log)');
}

function findFile(dir, name) {
  if (!fs.existsSync(dir)) return null;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory() && !e.name.startsWith('.xferd')) {
      const f = findFile(p, name);
      if (f) return f;
    } else if (e.name === name) return p;
  }
  return null;
}

async function runConverse(t) {
  const { mode, port, check, fail, sleep } = t;
  const name = `${mode} converse`;
  if (!fs.existsSync(DIST) || !fs.existsSync('/usr/lib/prosody/modules/mod_http_upload_external')) {
    const what = fs.existsSync(DIST) ? 'prosody-modules' : 'converse.js';
    if (process.env.CI || process.env.XFERD_REQUIRE_SERVICES) fail(name, what + ' not installed');
    else console.log(`SKIPPED: ${what} not installed (${name})`);
    return;
  }
  const srv = new t.Server('converse-' + mode, port, ['path_prefix = "upload/"']);
  await srv.start();
  const dir = path.join(t.WORK, 'prosody-' + mode);
  const [c2s, wsPort] = [await freePort(), await freePort()];
  const prosody = await startProsody(dir, c2s, wsPort, `https://127.0.0.1:${port}/upload/`, t.SECRET);
  const guard = { kill: () => prosody.kill('SIGKILL') };
  t.servers.add(guard);
  const web = await webServer(`
converse.plugins.add('xferd-test', { initialize() { window.xferdApi = this._converse.api; } });
converse.initialize({
  assets_path: '/dist/', websocket_url: 'ws://127.0.0.1:${wsPort}/xmpp-websocket',
  jid: 'alice@localhost', password: 'alicepass', auto_login: true,
  discover_connection_methods: false, view_mode: 'fullscreen', play_sounds: false,
  whitelisted_plugins: ['xferd-test'], loglevel: 'warn',
});`);
  const browser = await t.launch(mode, port);
  try {
    const page = await browser.newPage({ viewport: { width: 1000, height: 760 } });
    page.setDefaultTimeout(45_000);
    const consoleLog = path.join(t.ARTIFACTS, `converse-${mode}.console.log`);
    fs.writeFileSync(consoleLog, '');
    page.on('console', (m) => fs.appendFileSync(consoleLog, m.type() + ': ' + m.text() + '\n'));
    page.on('pageerror', (e) => fs.appendFileSync(consoleLog, 'pageerror: ' + e.message + '\n'));
    await page.goto(`http://127.0.0.1:${web.address().port}/`);
    await page.waitForFunction(() => window.xferdApi && window.xferdApi.connection.connected());
    check(`${name}: logged in to Prosody over WebSocket`, true);
    // A chat with oneself, opened from the roster as a person would.
    await page.click('text=alice@localhost (me)');
    try {
      await page.waitForSelector('input.fileupload', { state: 'attached', timeout: 30_000 });
    } finally {
      await page.screenshot({ path: path.join(t.ARTIFACTS, `${mode}-6-converse-chat.png`) });
    }
    const m0 = await t.metrics(port);
    await page.setInputFiles('input.fileupload', t.file.path);
    let stored = null;
    for (let i = 0; i < 150 && !stored; i++) {
      const f = findFile(srv.data, t.file.name);
      if (f && fs.statSync(f).size === t.file.size) stored = f;
      else await sleep(200);
    }
    const sha = stored ? t.sha256File(stored) : 'not stored';
    check(`${name}: file stored through the XEP-0363 slot with its SHA-256`, sha === t.file.sha,
      `${sha} != ${t.file.sha}`);
    const base = `https://127.0.0.1:${port}/upload/`;
    let shown = true;
    try {
      await page.waitForFunction((base) => document.body.innerHTML.includes(base), base, { timeout: 20_000 });
    } catch (e) {
      shown = false;
    }
    check(`${name}: the chat shows the download link`, shown, 'no ' + base + ' link in the page');
    await page.screenshot({ path: path.join(t.ARTIFACTS, `${mode}-6-converse.png`), fullPage: true });
    const m1 = await t.metrics(port);
    const delta = (p) => {
      const s = t.series('xferd_requests_total', { route: 'put', agent: 'browser', protocol: p });
      return (m1[s] || 0) - (m0[s] || 0);
    };
    const others = ['h1', 'h2', 'h3'].filter((p) => p !== mode).map(delta);
    check(`${name}: the browser's PUT went over ${mode}`, delta(mode) >= 1 && others.every((n) => n === 0),
      `PUTs on ${mode}: ${delta(mode)}, on the others: ${others}`);
  } finally {
    await browser.close();
    web.close();
    prosody.kill('SIGKILL');
    t.servers.delete(guard);
    await srv.stop();
  }
}

module.exports = { runConverse };
