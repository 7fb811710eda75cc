// Chromium resumes with 0-RTT (issue 16): called by test.js. Chromium reaches xferd through
// `xferd relay udp` with 25 ms each way (a mobile-like 50 ms RTT; QUIC forced for the
// relay's address), so a request sent in 0-RTT early data reaches the server a round trip
// before the handshake can complete; on bare loopback the handshake completes before the
// server has read it, and the request is then simply a 1-RTT one. xferd runs with a 2 s
// idle timeout, so the browser's first QUIC connection closes between two page loads; the
// second load is a new connection that resumes the first one's TLS session. Checks: both
// loads went over h3 and got the right bytes, the first connection was really closed (no h3
// connection open on the server), and the server counted the second load's GET in
// `xferd_early_data_requests_total{outcome="served"}`, which only a request read before the
// handshake completed increments (src/core/mod.rs, handshake_done) - so Chromium sent it in
// 0-RTT early data and xferd served it at once.
'use strict';
const fs = require('fs');
const path = require('path');
const readline = require('readline');
const { spawn } = require('child_process');

// Starts `xferd relay udp` in front of `port`; resolves to [child, relay port].
function relay(port) {
  const child = spawn(process.env.XFERD, ['relay', 'udp', '--to', `127.0.0.1:${port}`,
    '--delay-ms', '25', '--for', '300'], { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    const lines = readline.createInterface({ input: child.stdout });
    lines.once('line', (l) => {
      const m = /:(\d+)\s*$/.exec(l.trim());
      if (m) resolve([child, Number(m[1])]); else reject(new Error('relay printed ' + l));
    });
    child.once('exit', (c) => reject(new Error('relay exited with ' + c)));
  });
}

const EARLY = 'xferd_early_data_requests_total{outcome="served"}';
const H3_OPEN = 'xferd_connections_active{protocol="h3"}';

async function runZeroRtt({ port, Server, launch, check, fail, metrics, sleep }) {
  const t = 'h3 0-RTT';
  const srv = new Server('zerortt', port, ['idle_timeout = "2s"']);
  const bodies = {};
  for (const name of ['first.txt', 'second.txt']) {
    bodies[name] = `${name}: ${'x'.repeat(1000)}\n`;
    fs.mkdirSync(path.join(srv.data, 'zr'), { recursive: true });
    fs.writeFileSync(path.join(srv.data, 'zr', name), bodies[name]);
  }
  await srv.start();
  const [relayChild, via] = await relay(port);
  const browser = await launch('h3', via);
  try {
    const context = await browser.newContext();
    const page = await context.newPage();
    page.setDefaultTimeout(30_000);
    const load = async (name) => {
      const resp = await page.goto(`https://127.0.0.1:${via}/zr/${name}`);
      const proto = await page.evaluate(
        () => performance.getEntriesByType('navigation')[0].nextHopProtocol);
      const text = resp ? await resp.text() : '';
      check(`${t}: ${name} over h3 with its bytes`, proto === 'h3' && text === bodies[name],
        `nextHopProtocol ${proto}, ${text.length} bytes`);
    };
    await load('first.txt');
    const before = await metrics(port);
    check(`${t}: the first load made a full handshake`, before[EARLY] === 0,
      `${EARLY} = ${before[EARLY]}`);
    // The session ticket arrived with the first connection; wait for that connection to
    // time out idle (2 s) on both ends.
    let open = 1;
    for (let i = 0; i < 40 && open !== 0; i++) {
      await sleep(250);
      open = (await metrics(port))[H3_OPEN];
    }
    check(`${t}: the first QUIC connection closed while idle`, open === 0, `${H3_OPEN} = ${open}`);
    await sleep(1000); // Chromium's own idle timer (the same 2 s, negotiated) has fired too
    await load('second.txt');
    const after = await metrics(port);
    check(`${t}: Chromium resumed and sent its GET in 0-RTT early data, served at once`,
      after[EARLY] >= 1, `${EARLY} = ${after[EARLY]}`);
  } catch (e) {
    fail(`${t}: scenario aborted`, (e && e.stack) || e);
  } finally {
    await browser.close();
    relayChild.kill('SIGKILL');
    await srv.stop();
  }
}

module.exports = { runZeroRtt };
