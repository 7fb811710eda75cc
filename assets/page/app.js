// The xferd upload page: a hand-written tus 1.0 client (creation with a page token,
// resumable PATCHes, HEAD for the server's offset), no dependencies, no build step. Served
// by xferd under a CSP that allows only its own origin (src/core/page.rs).
//
// Per file: POST <tus>/ (Authorization: Bearer <token from the link's fragment>) -> upload
// URL, kept in localStorage under {prefix, name, size, lastModified}; PATCHes of at most
// the server's advised chunk size; after an error or a reload, HEAD -> Upload-Offset and
// on from there, so no stored byte is sent twice. Files of 32 MiB or more go as 4 partial
// uploads in parallel (tus concatenation, one stream each over h2/h3) and one final. The
// last answer's Repr-Digest is the stored file's SHA-256.
'use strict';
(function () {
  const $ = (sel, el) => (el || document).querySelector(sel);
  const TUS = $('meta[name="xferd-tus"]').getAttribute('content');
  const TOKEN = decodeURIComponent(location.hash.slice(1));
  const MIN_CHUNK = 1 << 20;
  const MAX_CHUNK = 64 << 20;
  const DEFAULT_CHUNK = 16 << 20;
  const PARALLEL_MIN = 32 << 20; // files this large go as parallel streams
  const STREAMS = 4;
  const RETRY_DELAYS = [500, 1000, 2000, 4000, 8000, 15000];
  const MAX_ATTEMPTS = 30;
  const MESSAGES = {
    signature_expired: 'This link has expired. Ask for a new one.',
    signature_invalid: 'This link is not valid (it may be incomplete or changed).',
    signature_missing: 'This link is not valid: it carries no upload permission.',
    signature_lifetime_exceeded: 'This link is valid for longer than the server allows. Ask for a new one.',
    too_large: 'This file is larger than this link allows.',
    storage_reservation_exceeded: 'This file is larger than the server can take now.',
    extension_not_allowed: 'Files of this type are not accepted here.',
    insufficient_storage: 'The server is out of disk space. Try again later.',
    file_exists: 'A file with this name is already there.',
    bad_path: 'This file name is not accepted.',
    too_many_uploads: 'The server has too many uploads in progress. Try again later.',
    too_many_uploads_for_client: 'You have too many uploads in progress. Wait for some to finish.',
    digest_mismatch: 'The file changed while it was uploaded. Choose it again.',
  };
  const RETRYABLE_CODES = ['preempted', 'mismatching_upload_offset', 'body_incomplete',
    'buffers_exhausted', 'rate_limited', 'storage_unavailable', 'too_early'];

  performance.setResourceTimingBufferSize(10000);
  const live = $('#live');
  const linkStatus = $('#link-status');
  const input = $('#files');
  const cap = parseToken(TOKEN);

  function parseToken(t) {
    const f = t.split('.');
    if (f.length !== 5 || f[0] !== 'xp1') return null;
    try {
      const bin = atob(f[3].replace(/-/g, '+').replace(/_/g, '/'));
      const prefix = new TextDecoder().decode(Uint8Array.from(bin, (c) => c.charCodeAt(0)));
      return { prefix: prefix, expires: Number(f[1]), maxSize: Number(f[2]) };
    } catch (e) {
      return null;
    }
  }

  function linkProblem(text) {
    linkStatus.textContent = text;
    linkStatus.hidden = false;
  }

  function fmtBytes(n) {
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(n < 10 ? 1 : 0) : n) + ' ' + units[i];
  }

  function fmtTime(s) {
    if (!isFinite(s)) return '…';
    s = Math.round(s);
    if (s < 60) return s + ' s';
    if (s < 3600) return Math.floor(s / 60) + ' min ' + (s % 60) + ' s';
    return Math.floor(s / 3600) + ' h ' + Math.floor((s % 3600) / 60) + ' min';
  }

  function b64(text) {
    const bytes = new TextEncoder().encode(text);
    let bin = '';
    bytes.forEach((b) => { bin += String.fromCharCode(b); });
    return btoa(bin);
  }

  function digestHex(header) {
    const m = /sha-256=:([A-Za-z0-9+/=]+):/.exec(header || '');
    if (!m) return null;
    return Array.from(atob(m[1]), (c) => c.charCodeAt(0).toString(16).padStart(2, '0')).join('');
  }

  function announce(text) {
    live.textContent = '';
    setTimeout(() => { live.textContent = text; }, 50);
  }

  function message(code, status) {
    if (MESSAGES[code]) return MESSAGES[code];
    if (/quota/.test(code || '')) return 'The upload quota for this link is used up.';
    if (status === 413) return MESSAGES.too_large;
    if (status === 507) return MESSAGES.insufficient_storage;
    if (status === 415) return MESSAGES.extension_not_allowed;
    return 'The server refused the upload' + (code ? ' (' + code + ')' : '') + '.';
  }

  // Failure kinds: Refused ends the upload with a message; anything else is retried.
  class Refused extends Error {
    constructor(code, status) { super(message(code, status)); this.code = code; this.status = status; }
  }
  class Retry extends Error {
    constructor(why, after) { super(why); this.after = after; }
  }
  class Aborted extends Error {}
  class Gone extends Error {}

  function classify(xhr) {
    const code = xhr.getResponseHeader('xferd-error') || '';
    const s = xhr.status;
    if (s === 404 || s === 410) return new Gone(code);
    const after = Number(xhr.getResponseHeader('retry-after')) * 1000 || undefined;
    if (RETRYABLE_CODES.includes(code) || s === 423 || s === 429 || s === 503 ||
        (s >= 500 && s !== 507)) {
      return new Retry('server answered ' + s, after);
    }
    return new Refused(code, s);
  }

  // One byte range of a file and its tus upload: the whole file, or one partial of a
  // parallel (concatenated) upload. `offset` is absolute in the file.
  class Part {
    constructor(start, end, url) {
      this.start = start;
      this.end = end;
      this.url = url || null;
      this.offset = start;
      this.loaded = 0;
      this.xhr = null;
    }
  }

  class Upload {
    constructor(file) {
      this.file = file;
      this.key = 'xferd-upload:' + JSON.stringify([cap.prefix, file.name, file.size, file.lastModified]);
      const saved = JSON.parse(localStorage.getItem(this.key) || 'null') || {};
      // Large files go as parallel partials (tus concatenation) sharing one directory.
      this.parallel = saved.parts ? saved.parts.length > 1 : file.size >= PARALLEL_MIN;
      this.dir = saved.dir || randomHex(8);
      this.link = saved.link;
      this.final = saved.final || null;
      this.parts = saved.parts ? saved.parts.map((p) => new Part(p.start, p.end, p.url)) : this.split();
      this.chunk = DEFAULT_CHUNK;
      this.paused = false;
      this.running = false;
      this.attempt = 0;
      this.samples = [];
      this.nextAnnounce = 25;
      this.row = $('#row').content.firstElementChild.cloneNode(true);
      $('.name', this.row).textContent = file.name;
      $('.size', this.row).textContent = fmtBytes(file.size);
      $('progress', this.row).setAttribute('aria-label', 'Upload progress of ' + file.name);
      this.pauseButton = $('.pause', this.row);
      this.pauseButton.setAttribute('aria-label', 'Pause upload of ' + file.name);
      this.pauseButton.addEventListener('click', () => this.toggle());
      $('#uploads').appendChild(this.row);
    }

    split() {
      const size = this.file.size;
      if (!this.parallel) return [new Part(0, size)];
      const step = Math.ceil(size / STREAMS);
      const parts = [];
      for (let a = 0; a < size; a += step) parts.push(new Part(a, Math.min(size, a + step)));
      return parts;
    }

    sent() {
      return this.parts.reduce((n, p) => n + (p.offset - p.start) + p.loaded, 0);
    }

    state(name, text) {
      this.row.dataset.state = name;
      if (text !== undefined) $('.status', this.row).textContent = text;
    }

    progress() {
      const size = this.file.size;
      const done = Math.min(size, this.sent());
      const now = performance.now();
      this.samples.push([now, done]);
      while (this.samples.length > 2 && now - this.samples[0][0] > 3000) this.samples.shift();
      const [t0, b0] = this.samples[0];
      const rate = now > t0 ? ((done - b0) * 1000) / (now - t0) : 0;
      const pct = size ? Math.floor((done * 100) / size) : 100;
      $('progress', this.row).value = pct;
      this.row.dataset.progress = String(done);
      if (this.paused) return;
      this.state('uploading', pct + ' % · ' + fmtBytes(rate) + '/s · ' +
        fmtTime(rate > 0 ? (size - done) / rate : Infinity) + ' left' +
        (this.parts.length > 1 ? ' · ' + this.parts.length + ' streams' : ''));
      if (pct >= this.nextAnnounce && pct < 100) {
        announce(this.file.name + ': ' + pct + ' percent');
        this.nextAnnounce = pct - (pct % 25) + 25;
      }
    }

    send(part, method, url, headers, body) {
      return new Promise((resolve, reject) => {
        const xhr = new XMLHttpRequest();
        part.xhr = xhr;
        xhr.open(method, url);
        Object.keys(headers).forEach((k) => xhr.setRequestHeader(k, headers[k]));
        if (body) {
          xhr.upload.onprogress = (e) => { part.loaded = e.loaded; this.progress(); };
        }
        const settle = (f) => { part.xhr = null; part.loaded = 0; f(); };
        xhr.onload = () => settle(() => resolve(xhr));
        xhr.onerror = () => settle(() => reject(new Retry('network error')));
        xhr.ontimeout = () => settle(() => reject(new Retry('timed out')));
        xhr.onabort = () => settle(() => reject(new Aborted('paused')));
        xhr.send(body || null);
      });
    }

    save() {
      localStorage.setItem(this.key, JSON.stringify({
        link: this.link, dir: this.dir, final: this.final,
        parts: this.parts.map((p) => ({ start: p.start, end: p.end, url: p.url })),
      }));
    }

    metadata() {
      const f = this.file;
      return 'filename ' + b64(f.name) + (f.type ? ',filetype ' + b64(f.type) : '') +
        (this.parallel ? ',dir ' + b64(this.dir) : '');
    }

    async create(part) {
      const headers = {
        'Tus-Resumable': '1.0.0',
        'Upload-Length': String(part.end - part.start),
        'Upload-Metadata': this.metadata(),
        Authorization: 'Bearer ' + TOKEN,
      };
      if (this.parallel) headers['Upload-Concat'] = 'partial';
      const xhr = await this.send(part, 'POST', TUS, headers);
      if (xhr.status !== 201) throw classify(xhr);
      part.url = new URL(xhr.getResponseHeader('location'), location.href).href;
      part.offset = part.start;
      this.link = new URL(xhr.getResponseHeader('content-location') || '', location.href).href;
      const hint = Number(xhr.getResponseHeader('xferd-chunk-size'));
      if (hint) this.chunk = Math.min(MAX_CHUNK, Math.max(MIN_CHUNK, hint));
      this.save();
    }

    async head(part) {
      const xhr = await this.send(part, 'HEAD', part.url, { 'Tus-Resumable': '1.0.0' });
      if (xhr.status !== 200) throw classify(xhr);
      part.offset = part.start + (Number(xhr.getResponseHeader('upload-offset')) || 0);
      this.sha = digestHex(xhr.getResponseHeader('repr-digest')) || this.sha;
    }

    async patch(part) {
      const end = Math.min(part.end, part.offset + this.chunk);
      const xhr = await this.send(part, 'PATCH', part.url, {
        'Tus-Resumable': '1.0.0',
        'Upload-Offset': String(part.offset - part.start),
        'Content-Type': 'application/offset+octet-stream',
      }, this.file.slice(part.offset, end));
      if (xhr.status !== 204) throw classify(xhr);
      part.offset = part.start + (Number(xhr.getResponseHeader('upload-offset')) || end - part.start);
      this.sha = digestHex(xhr.getResponseHeader('repr-digest')) || this.sha;
      this.attempt = 0;
      this.progress();
    }

    async runPart(part) {
      if (!part.url) await this.create(part);
      while (part.offset < part.end && !this.paused) await this.patch(part);
    }

    // The final of a parallel upload: created once every partial is complete; answered
    // complete at once (or, while the server joins the parts, after a few HEADs).
    async finish() {
      const probe = new Part(0, this.file.size, this.final);
      if (!this.final) {
        const urls = this.parts.map((p) => new URL(p.url).pathname).join(' ');
        const xhr = await this.send(probe, 'POST', TUS, {
          'Tus-Resumable': '1.0.0',
          'Upload-Concat': 'final;' + urls,
          'Upload-Metadata': this.metadata(),
          Authorization: 'Bearer ' + TOKEN,
        });
        if (xhr.status !== 201) throw classify(xhr);
        this.final = new URL(xhr.getResponseHeader('location'), location.href).href;
        this.link = new URL(xhr.getResponseHeader('content-location') || '', location.href).href;
        this.sha = digestHex(xhr.getResponseHeader('repr-digest'));
        this.save();
        probe.url = this.final;
      }
      for (let i = 0; !this.sha && i < 50; i++) {
        await this.head(probe);
        if (!this.sha) await new Promise((r) => setTimeout(r, 200));
      }
    }

    abortAll() {
      this.parts.forEach((p) => { if (p.xhr) p.xhr.abort(); });
    }

    async run() {
      if (this.running) return;
      this.running = true;
      try {
        await this.loop();
      } finally {
        this.running = false;
      }
    }

    async loop() {
      for (;;) {
        if (this.paused) return;
        try {
          this.state('uploading', 'Starting…');
          if (this.final) {
            // Every part was sent and joined before: only the final is left to ask about.
            await this.finish();
            return this.done();
          }
          // Where the server is: HEAD every upload it already has.
          await Promise.all(this.parts.filter((p) => p.url).map((p) => this.head(p)));
          const stored = this.sent();
          if (this.row.dataset.resumedFrom === undefined && stored > 0) {
            this.row.dataset.resumedFrom = String(stored);
            announce(this.file.name + ': resuming at ' + fmtBytes(stored));
          }
          this.progress();
          const runs = this.parts.map((p) => this.runPart(p));
          try {
            await Promise.all(runs);
          } catch (e) {
            this.abortAll();
            await Promise.allSettled(runs);
            throw e;
          }
          if (this.paused) return;
          if (this.parallel) await this.finish();
          else if (!this.sha) await this.head(this.parts[0]);
          return this.done();
        } catch (e) {
          if (e instanceof Aborted) return;
          if (e instanceof Gone) {
            // The server no longer knows the upload (expired or finished long ago): anew.
            localStorage.removeItem(this.key);
            this.final = null;
            this.parts = this.split();
            continue;
          }
          if (e instanceof Refused) return this.fail(e);
          this.attempt++;
          if (this.attempt > MAX_ATTEMPTS) return this.fail(new Error('Gave up after repeated network errors. Choose the file again to resume.'));
          const wait = e.after || RETRY_DELAYS[Math.min(this.attempt - 1, RETRY_DELAYS.length - 1)];
          this.state('retrying', 'Connection problem (' + e.message + '); retrying in ' +
            fmtTime(wait / 1000) + '…');
          if (this.attempt === 1) announce(this.file.name + ': connection lost, retrying');
          await new Promise((r) => setTimeout(r, wait));
        }
      }
    }

    toggle() {
      this.paused = !this.paused;
      this.pauseButton.textContent = this.paused ? 'Resume' : 'Pause';
      this.pauseButton.setAttribute('aria-label',
        (this.paused ? 'Resume upload of ' : 'Pause upload of ') + this.file.name);
      if (this.paused) {
        this.abortAll();
        this.state('paused', 'Paused at ' + fmtBytes(this.sent()) + '.');
        announce(this.file.name + ': paused');
      } else {
        this.run();
      }
    }

    done() {
      $('progress', this.row).value = 100;
      this.row.dataset.progress = String(this.file.size);
      this.row.dataset.sha256 = this.sha || '';
      this.row.dataset.link = this.link;
      this.row.dataset.streams = String(this.parts.length);
      this.state('done', 'Done: ' + fmtBytes(this.file.size) + ' stored.');
      this.pauseButton.hidden = true;
      const a = $('.link', this.row);
      a.href = this.link;
      a.textContent = this.link;
      $('.sha', this.row).textContent = this.sha || 'unknown';
      $('.result', this.row).hidden = false;
      const type = this.file.type || '';
      if (type.startsWith('video/') || type.startsWith('audio/')) {
        const media = document.createElement(type.startsWith('video/') ? 'video' : 'audio');
        media.controls = true;
        media.preload = 'metadata';
        media.src = this.link;
        media.setAttribute('aria-label', 'Play ' + this.file.name);
        $('.preview', this.row).appendChild(media);
      }
      announce(this.file.name + ': upload complete');
    }

    fail(e) {
      this.row.dataset.code = e.code || 'network';
      this.state('error', e.message);
      this.pauseButton.hidden = true;
      announce(this.file.name + ': ' + e.message);
      if ((e.code || '').startsWith('signature_')) linkProblem(e.message);
    }
  }

  function randomHex(bytes) {
    return Array.from(crypto.getRandomValues(new Uint8Array(bytes)),
      (b) => b.toString(16).padStart(2, '0')).join('');
  }

  // Another link pasted into this tab: start over with its token.
  window.addEventListener('hashchange', () => location.reload());

  function start(files) {
    Array.from(files).forEach((f) => new Upload(f).run());
  }

  if (!cap) {
    linkProblem('This link is incomplete: it carries no upload permission. Open the full link you were given.');
    input.disabled = true;
    return;
  }
  $('#limits').textContent = 'Each file up to ' + fmtBytes(cap.maxSize) + '; this link works until ' +
    new Date(cap.expires * 1000).toLocaleString() + '.';
  input.addEventListener('change', () => {
    start(input.files);
    input.value = '';
  });
  const drop = $('#drop');
  drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    if (e.dataTransfer && e.dataTransfer.files.length) start(e.dataTransfer.files);
  });
})();
