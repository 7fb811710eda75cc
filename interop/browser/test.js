// The upload page in headless Chromium (playwright-core, Debian's binary), run by run.sh,
// which sets XFERD, CHROMIUM, WORK (temp dir with certs/), PIN (base64 SHA-256 of the test
// key's SPKI), ARTIFACTS, PORT_H3 and PORT_H2. For each mode (h3: QUIC forced for the
// origin, h2: QUIC off) it starts its own xferd and checks: the page and its uploads go over
// that protocol (nextHopProtocol, and the server's per-protocol counters); three files (one
// of 100 MB) arrive with the right SHA-256 on the server's disk; a reload in the middle of a
// big upload resumes from the server's offset and sends no stored byte again; a server
// killed mid-upload and started again is retried until the upload completes; an expired
// link shows its message; a WebM video plays in <video> after a seek to its middle, its
// range requests served over the mode's protocol. Screenshots go to ARTIFACTS.
'use strict';
const { chromium } = require('playwright-core');
const fs = require('fs');
const path = require('path');
const crypto = require('crypto');
const https = require('https');
const { spawn, execFileSync } = require('child_process');

const { XFERD, CHROMIUM, WORK, PIN, ARTIFACTS } = process.env;
const CA = fs.readFileSync(path.join(WORK, 'certs/ca.pem'));
const SECRET = crypto.randomBytes(16).toString('hex');
const MB = 1 << 20;
let passed = 0;
let failed = 0;
const servers = new Set();

function pass(name) { passed++; console.log('PASS ' + name); }
function fail(name, why) { failed++; console.log('FAIL ' + name + ': ' + why); }
function check(name, ok, why) { if (ok) pass(name); else fail(name, why); return ok; }
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const watchdog = setTimeout(() => {
  console.log('FAIL browser: the run took longer than 420 s');
  for (const s of servers) s.kill();
  process.exit(1);
}, 420_000);

function sha256File(p) {
  const h = crypto.createHash('sha256');
  const fd = fs.openSync(p, 'r');
  const buf = Buffer.alloc(4 * MB);
  for (let n; (n = fs.readSync(fd, buf, 0, buf.length, null)) > 0;) h.update(buf.subarray(0, n));
  fs.closeSync(fd);
  return h.digest('hex');
}

function makeFile(p, size) {
  const fd = fs.openSync(p, 'w');
  for (let left = size; left > 0; left -= MB) fs.writeSync(fd, crypto.randomBytes(Math.min(MB, left)));
  fs.closeSync(fd);
  return { path: p, name: path.basename(p), size, sha: sha256File(p) };
}

function get(port, p) {
  return new Promise((resolve, reject) => {
    const req = https.get({ host: '127.0.0.1', port, path: p, ca: CA, timeout: 3000 }, (res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode, body }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

async function metrics(port) {
  const out = {};
  for (const line of (await get(port, '/metrics')).body.split('\n')) {
    const m = /^(xferd_[a-z_]+(?:\{[^}]*\})?) ([0-9.e+]+)$/.exec(line);
    if (m) out[m[1]] = Number(m[2]);
  }
  return out;
}
const series = (name, labels) => name + '{' + Object.keys(labels).sort()
  .map((k) => k + '="' + labels[k] + '"').join(',') + '}';

class Server {
  constructor(mode, port, extra) {
    this.mode = mode;
    this.port = port;
    this.dir = path.join(WORK, mode);
    this.data = path.join(this.dir, 'data');
    fs.mkdirSync(this.data, { recursive: true });
    this.conf = path.join(this.dir, 'xferd.toml');
    this.log = path.join(ARTIFACTS, 'xferd-' + mode + '.log');
    fs.writeFileSync(this.log, '');
    fs.writeFileSync(this.conf, [
      '[server]', `listen = "127.0.0.1:${port}"`, `storage_path = "${this.data}"`,
      `state_path = "${path.join(this.dir, 'state')}"`, 'max_upload_size = "1GB"', ...(extra || []),
      '[tls]', `cert = "${WORK}/certs/server.pem"`, `key = "${WORK}/certs/server.key"`,
      '[security]', `secret = "${SECRET}"`, 'allowed_clock_skew = "0s"', '',
    ].join('\n'));
  }

  async start() {
    const log = fs.openSync(this.log, 'a');
    this.child = spawn(XFERD, ['serve', '--config', this.conf], { stdio: ['ignore', log, log] });
    fs.closeSync(log);
    servers.add(this);
    for (let i = 0; i < 150; i++) {
      if (this.child.exitCode !== null) break;
      try {
        if ((await get(this.port, '/health')).status === 200) return;
      } catch (e) { /* not yet */ }
      await sleep(200);
    }
    throw new Error('xferd did not become healthy in 30 s (see ' + this.log + ')');
  }

  kill() {
    if (this.child && this.child.exitCode === null) this.child.kill('SIGKILL');
  }

  async stop() {
    if (!this.child || this.child.exitCode !== null) return;
    const gone = new Promise((r) => this.child.once('exit', r));
    this.child.kill('SIGKILL');
    await gone;
    servers.delete(this);
  }

  sign(expires) {
    return execFileSync(XFERD, ['sign', '--config', this.conf, '--page', '--prefix', 'drop',
      '--expires', expires, '--max-size', '300MB', '--base-url', `https://127.0.0.1:${this.port}`])
      .toString().trim();
  }

  // The stored file a download link points at.
  stored(link) {
    return path.join(this.data, decodeURIComponent(new URL(link).pathname));
  }
}

const rows = (page) => page.$$eval('#uploads li', (lis) => lis.map((li) => ({
  name: li.querySelector('.name').textContent, state: li.dataset.state, sha: li.dataset.sha256,
  streams: li.dataset.streams,
  link: li.dataset.link, code: li.dataset.code, progress: Number(li.dataset.progress || 0),
  resumedFrom: li.dataset.resumedFrom, status: li.querySelector('.status').textContent,
})));

async function waitRows(page, n, states, timeout) {
  await page.waitForFunction(([n, states]) => {
    const lis = document.querySelectorAll('#uploads li');
    return lis.length === n && Array.from(lis).every((li) => states.includes(li.dataset.state));
  }, [n, states], { timeout, polling: 100 });
  return rows(page);
}

async function waitProgress(page, name, bytes, timeout) {
  await page.waitForFunction(([name, bytes]) => Array.from(document.querySelectorAll('#uploads li'))
    .some((li) => li.querySelector('.name').textContent === name &&
      Number(li.dataset.progress || 0) >= bytes), [name, bytes], { timeout, polling: 50 });
}

// Protocols of the page's own resource-timing entries whose URL contains `part` (requests
// that got an answer; those that failed while the server was down have no protocol).
const protocols = (page, part) => page.evaluate((part) => performance.getEntriesByType('resource')
  .filter((e) => e.name.includes(part) && e.responseStatus > 0).map((e) => e.nextHopProtocol), part);

async function throttle(cdp, bytesPerSec) {
  await cdp.send('Network.emulateNetworkConditions', {
    offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: bytesPerSec,
  });
}

function checkStored(t, srv, file, row) {
  check(`${t}: ${file.name} done`, row && row.state === 'done', JSON.stringify(row));
  if (!row || row.state !== 'done') return;
  check(`${t}: ${file.name} page shows the SHA-256`, row.sha === file.sha, `${row.sha} != ${file.sha}`);
  const p = srv.stored(row.link);
  const got = fs.existsSync(p) ? sha256File(p) : 'missing ' + p;
  check(`${t}: ${file.name} stored with its SHA-256`, got === file.sha, `${got} != ${file.sha}`);
}

// Headless Chromium: QUIC forced for xferd's origin (h3), or off (h2); the test key pinned.
function launch(mode, port) {
  const args = ['--no-sandbox', '--autoplay-policy=no-user-gesture-required',
    `--ignore-certificate-errors-spki-list=${PIN}`];
  if (mode === 'h3') args.push('--enable-quic', `--origin-to-force-quic-on=127.0.0.1:${port}`);
  else args.push('--disable-quic');
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args });
}

async function runMode(mode, port, files) {
  const t = mode;
  const srv = new Server(mode, port);
  await srv.start();
  const browser = await launch(mode, port);
  try {
    const context = await browser.newContext({ viewport: { width: 1000, height: 760 } });
    const page = await context.newPage();
    page.setDefaultTimeout(60_000);
    const link = srv.sign('1h');
    await page.goto(link);
    const nav = await page.evaluate(() => performance.getEntriesByType('navigation')[0].nextHopProtocol);
    check(`${t}: page loaded over ${mode}`, nav === mode, `nextHopProtocol ${nav}`);
    const assets = await protocols(page, '/upload-page/');
    check(`${t}: page script and stylesheet over ${mode}`, assets.length === 2 &&
      assets.every((p) => p === mode), JSON.stringify(assets));
    await page.keyboard.press('Tab');
    const focused = await page.evaluate(() => document.activeElement && document.activeElement.id);
    check(`${t}: the file chooser is the first keyboard stop`, focused === 'files', `focus on ${focused}`);
    await page.screenshot({ path: path.join(ARTIFACTS, `${mode}-1-rest.png`), fullPage: true });
    const phone = await context.newPage();
    await phone.setViewportSize({ width: 390, height: 844 });
    await phone.goto(link);
    await phone.screenshot({ path: path.join(ARTIFACTS, `${mode}-1-rest-phone.png`), fullPage: true });
    await phone.close();

    // Three files at once, one of 100 MB.
    const three = [files.small, files.medium, files.big];
    await page.setInputFiles('#files', three.map((f) => f.path));
    let got = await waitRows(page, 3, ['done', 'error'], 180_000);
    for (const f of three) checkStored(`${t} three files`, srv, f, got.find((r) => r.name === f.name));
    const up = await protocols(page, '/files/');
    check(`${t}: every upload request over ${mode}`, up.length >= 6 && up.every((p) => p === mode),
      `${up.length} requests: ${[...new Set(up)]}`);
    await page.screenshot({ path: path.join(ARTIFACTS, `${mode}-3-done.png`), fullPage: true });

    // Reload in the middle of a big upload; choosing the file again resumes it.
    const cdp = await context.newCDPSession(page);
    await cdp.send('Network.enable');
    await page.reload();
    await throttle(cdp, 5 * MB);
    await page.setInputFiles('#files', files.big2.path);
    await waitProgress(page, files.big2.name, 30 * MB, 60_000);
    await page.screenshot({ path: path.join(ARTIFACTS, `${mode}-2-mid-upload.png`), fullPage: true });
    const before = (await rows(page))[0];
    const sent = [];
    const heads = {};
    await page.reload();
    await throttle(cdp, -1);
    const onRequest = (r) => {
      if (r.url().includes('/files/')) {
        sent.push([r.method(), r.url(), Number(r.headers()['upload-offset']), r.headers()['upload-concat']]);
      }
    };
    const onResponse = (r) => {
      if (r.request().method() === 'HEAD' && r.url().includes('/files/')) {
        heads[r.url()] = Number(r.headers()['upload-offset']);
      }
    };
    page.on('request', onRequest);
    page.on('response', onResponse);
    await page.setInputFiles('#files', files.big2.path);
    got = await waitRows(page, 1, ['done', 'error'], 120_000);
    page.off('request', onRequest);
    page.off('response', onResponse);
    const from = Number(got[0].resumedFrom);
    // Per upload URL (one per parallel stream): its first PATCH starts at the offset its HEAD
    // reported, none goes below it, and no partial is created anew.
    const patches = sent.filter((s) => s[0] === 'PATCH');
    const urls = [...new Set(patches.map((s) => s[1]))];
    const fromServer = urls.every((u) => u in heads &&
      patches.find((s) => s[1] === u)[2] === heads[u] &&
      patches.filter((s) => s[1] === u).every((s) => s[2] >= heads[u]));
    check(`${t} reload: still unfinished when reloaded`, before.progress < files.big2.size, JSON.stringify(before));
    check(`${t} reload: resumed from the server's offsets, no stored byte sent again`, from > 0 &&
      urls.length > 0 && fromServer &&
      !sent.some((s) => s[0] === 'POST' && s[3] !== undefined && s[3] === 'partial'),
      `resumedFrom ${got[0].resumedFrom}, HEADs ${JSON.stringify(heads)}, requests ${JSON.stringify(sent)}`);
    check(`${t} reload: ${got[0].streams} parallel streams`, Number(got[0].streams) === 4, got[0].streams);
    checkStored(`${t} reload`, srv, files.big2, got[0]);

    // The server killed in the middle of an upload, then started again.
    await page.reload();
    await throttle(cdp, 5 * MB);
    await page.setInputFiles('#files', files.cut.path);
    await waitProgress(page, files.cut.name, 15 * MB, 60_000);
    await srv.stop();
    let retrying = true;
    try {
      await waitRows(page, 1, ['retrying'], 30_000);
    } catch (e) {
      retrying = false;
    }
    const mid = (await rows(page))[0];
    check(`${t} server cut: the page says it retries`, retrying, JSON.stringify(mid));
    await sleep(1500);
    await srv.start();
    await throttle(cdp, -1);
    got = await waitRows(page, 1, ['done', 'error'], 150_000);
    checkStored(`${t} server cut`, srv, files.cut, got[0]);
    const afterCut = await protocols(page, '/files/');
    check(`${t} server cut: retried requests over ${mode}`, afterCut.length > 0 &&
      afterCut.every((p) => p === mode), JSON.stringify(afterCut));

    // A video: uploaded through the page, played from xferd after a seek to the middle.
    await page.reload();
    const m0 = await metrics(port);
    await page.setInputFiles('#files', files.video.path);
    got = await waitRows(page, 1, ['done', 'error'], 60_000);
    checkStored(`${t} video`, srv, files.video, got[0]);
    const play = await page.evaluate(() => new Promise((resolve) => {
      const v = document.querySelector('.preview video');
      if (!v) return resolve({ error: 'no <video> on the page' });
      const timer = setTimeout(() => resolve({ error: 'timed out', t: v.currentTime, rs: v.readyState }), 30_000);
      const fail = () => { clearTimeout(timer); resolve({ error: 'media error ' + (v.error && v.error.code) }); };
      v.muted = true;
      v.addEventListener('error', fail);
      const go = () => {
        const mid = v.duration / 2;
        v.addEventListener('seeked', () => {
          v.play().catch((e) => resolve({ error: String(e) }));
          const tick = () => {
            if (v.currentTime > mid + 0.5) {
              clearTimeout(timer);
              resolve({ duration: v.duration, mid, t: v.currentTime });
            } else setTimeout(tick, 50);
          };
          tick();
        }, { once: true });
        v.currentTime = mid;
      };
      if (v.readyState >= 1) go(); else v.addEventListener('loadedmetadata', go, { once: true });
    }));
    check(`${t} video: seeks to the middle and plays`, !play.error && play.duration > 10 &&
      play.t > play.mid, JSON.stringify(play));
    await page.screenshot({ path: path.join(ARTIFACTS, `${mode}-4-video.png`), fullPage: true });
    const m1 = await metrics(port);
    const delta = (name, labels) => (m1[series(name, labels)] || 0) - (m0[series(name, labels)] || 0);
    const ranges = delta('xferd_range_requests_total', { protocol: mode });
    const others = ['h1', 'h2', 'h3'].filter((p) => p !== mode)
      .map((p) => delta('xferd_requests_total', { route: 'download', agent: 'browser', protocol: p }));
    check(`${t} video: range requests (first bytes, then the seek) served over ${mode}`, ranges >= 2 &&
      delta('xferd_requests_total', { route: 'download', agent: 'browser', protocol: mode }) >= 1 &&
      others.every((n) => n === 0), `ranges ${ranges}, downloads on other protocols ${others}`);

    // Metrics by route and client family (counted since the restart above).
    const pageHits = m1[series('xferd_requests_total', { route: 'page', agent: 'browser', protocol: mode })];
    const tusHits = m1[series('xferd_requests_total', { route: 'tus', agent: 'browser', protocol: mode })];
    check(`${t} metrics: page and tus requests counted for browser/${mode}`, pageHits >= 3 && tusHits >= 3,
      `page ${pageHits}, tus ${tusHits}`);

    // An expired link: its own message.
    const expired = srv.sign('1s');
    await sleep(2100);
    await page.goto('about:blank');
    await page.goto(expired);
    // A file not uploaded before (one that was is found in localStorage and shown as done).
    await page.setInputFiles('#files', files.late.path);
    got = await waitRows(page, 1, ['done', 'error'], 30_000);
    const alert = await page.textContent('#link-status');
    check(`${t} expired link: "this link has expired"`, got[0].code === 'signature_expired' &&
      /link has expired/i.test(alert) && /link has expired/i.test(got[0].status),
      `${JSON.stringify(got[0])}, alert ${alert}`);
    await page.screenshot({ path: path.join(ARTIFACTS, `${mode}-5-expired.png`), fullPage: true });
  } finally {
    await browser.close();
    await srv.stop();
  }
}

(async () => {
  const dir = path.join(WORK, 'files');
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'notes.txt'), 'hello from the upload page\n'.repeat(800));
  fs.writeFileSync(path.join(dir, 'late.txt'), 'too late\n');
  const files = {
    late: { path: path.join(dir, 'late.txt'), name: 'late.txt' },
    small: { path: path.join(dir, 'notes.txt'), name: 'notes.txt', sha: sha256File(path.join(dir, 'notes.txt')) },
    medium: makeFile(path.join(dir, 'photo.jpg'), 3 * MB + 12345),
    big: makeFile(path.join(dir, 'big.bin'), 100 * MB),
    big2: makeFile(path.join(dir, 'reload.bin'), 100 * MB),
    cut: makeFile(path.join(dir, 'cut.bin'), 60 * MB),
  };
  const video = path.join(dir, 'clip.webm');
  // 20 s of a noisy test pattern, about 15 MB (noise keeps the bitrate up), so that a seek
  // to the middle lies beyond what the browser buffers first and needs a range request.
  execFileSync('ffmpeg', ['-v', 'error', '-f', 'lavfi', '-i',
    'testsrc=size=320x180:rate=25,noise=alls=30:allf=t', '-t', '20', '-c:v', 'libvpx',
    '-qmin', '0', '-qmax', '10', '-b:v', '20M', '-deadline', 'realtime', '-cpu-used', '8',
    '-g', '25', '-y', video]);
  files.video = { path: video, name: 'clip.webm', size: fs.statSync(video).size, sha: sha256File(video) };
  const only = process.env.ONLY;
  for (const [mode, port] of [['h3', process.env.PORT_H3], ['h2', process.env.PORT_H2]]) {
    if (only && only !== 'page') break;
    try {
      await runMode(mode, Number(port), files);
    } catch (e) {
      fail(`${mode}: scenario aborted`, (e && e.stack) || e);
    }
  }
  if (!only || only === 'zerortt') {
    const { runZeroRtt } = require('./zerortt.js');
    await runZeroRtt({ port: Number(process.env.PORT_ZERORTT), Server, launch, check, fail,
      metrics, sleep });
  }
  const { runConverse } = require('./converse.js');
  for (const [mode, port] of [['h3', process.env.PORT_CONVERSE_H3], ['h2', process.env.PORT_CONVERSE_H2]]) {
    if (only && only !== 'converse') break;
    try {
      await runConverse({ mode, port: Number(port), Server, launch, check, pass, fail, metrics, series,
        sha256File, sleep, servers, SECRET, WORK, ARTIFACTS, file: files.medium });
    } catch (e) {
      fail(`${mode} converse: scenario aborted`, (e && e.stack) || e);
    }
  }
  for (const s of servers) s.kill();
  clearTimeout(watchdog);
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
})();
