// The xferd upload page: a hand-written tus 1.0 client (creation with a page token,
// resumable PATCHes, HEAD for the server's offset), no dependencies, no build step. Served
// by xferd under a CSP that allows only its own origin (src/core/page.rs).
//
// Per file: POST <tus>/ (Authorization: Bearer <token from the link's fragment>) -> upload
// URL, kept in localStorage under {prefix, name, size, lastModified}; PATCHes of at most
// the server's advised chunk size; after an error or a reload, HEAD -> Upload-Offset and
// on from there, so no stored byte is sent twice. The final answer's Repr-Digest is the
// stored file's SHA-256.
'use strict';
(function () {
  const $ = (sel, el) => (el || document).querySelector(sel);
  const TUS = $('meta[name="xferd-tus"]').getAttribute('content');
  const TOKEN = decodeURIComponent(location.hash.slice(1));
  const MIN_CHUNK = 1 << 20;
  const MAX_CHUNK = 64 << 20;
  const DEFAULT_CHUNK = 16 << 20;
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

  class Upload {
    constructor(file) {
      this.file = file;
      this.key = 'xferd-upload:' + JSON.stringify([cap.prefix, file.name, file.size, file.lastModified]);
      const saved = JSON.parse(localStorage.getItem(this.key) || 'null');
      this.url = saved && saved.url;
      this.link = saved && saved.link;
      this.offset = 0;
      this.sent = 0;
      this.chunk = DEFAULT_CHUNK;
      this.paused = false;
      this.running = false;
      this.attempt = 0;
      this.samples = [];
      this.nextAnnounce = 25;
      this.row = $('#row').content.firstElementChild.cloneNode(true);
      $('.name', this.row).textContent = file.name;
      $('.size', this.row).textContent = fmtBytes(file.size);
      const bar = $('progress', this.row);
      bar.setAttribute('aria-label', 'Upload progress of ' + file.name);
      this.pauseButton = $('.pause', this.row);
      this.pauseButton.setAttribute('aria-label', 'Pause upload of ' + file.name);
      this.pauseButton.addEventListener('click', () => this.toggle());
      $('#uploads').appendChild(this.row);
    }

    state(name, text) {
      this.row.dataset.state = name;
      if (text !== undefined) $('.status', this.row).textContent = text;
    }

    progress(done) {
      const size = this.file.size;
      const now = performance.now();
      this.samples.push([now, done]);
      while (this.samples.length > 2 && now - this.samples[0][0] > 3000) this.samples.shift();
      const [t0, b0] = this.samples[0];
      const rate = now > t0 ? ((done - b0) * 1000) / (now - t0) : 0;
      const pct = size ? Math.floor((done * 100) / size) : 100;
      $('progress', this.row).value = pct;
      this.row.dataset.progress = String(done);
      this.state('uploading', pct + ' % · ' + fmtBytes(rate) + '/s · ' +
        fmtTime(rate > 0 ? (size - done) / rate : Infinity) + ' left');
      if (pct >= this.nextAnnounce && pct < 100) {
        announce(this.file.name + ': ' + pct + ' percent');
        this.nextAnnounce = pct - (pct % 25) + 25;
      }
    }

    send(method, url, headers, body) {
      return new Promise((resolve, reject) => {
        const xhr = new XMLHttpRequest();
        this.xhr = xhr;
        xhr.open(method, url);
        Object.keys(headers).forEach((k) => xhr.setRequestHeader(k, headers[k]));
        if (body) {
          const base = this.offset;
          xhr.upload.onprogress = (e) => this.progress(base + e.loaded);
        }
        xhr.onload = () => resolve(xhr);
        xhr.onerror = () => reject(new Retry('network error'));
        xhr.ontimeout = () => reject(new Retry('timed out'));
        xhr.onabort = () => reject(new Aborted('paused'));
        xhr.send(body || null);
      });
    }

    save() {
      localStorage.setItem(this.key, JSON.stringify({ url: this.url, link: this.link }));
    }

    async create() {
      const f = this.file;
      const meta = 'filename ' + b64(f.name) + (f.type ? ',filetype ' + b64(f.type) : '');
      const xhr = await this.send('POST', TUS, {
        'Tus-Resumable': '1.0.0',
        'Upload-Length': String(f.size),
        'Upload-Metadata': meta,
        Authorization: 'Bearer ' + TOKEN,
      });
      if (xhr.status !== 201) throw classify(xhr);
      this.url = new URL(xhr.getResponseHeader('location'), location.href).href;
      this.link = new URL(xhr.getResponseHeader('content-location') || '', location.href).href;
      const hint = Number(xhr.getResponseHeader('xferd-chunk-size'));
      if (hint) this.chunk = Math.min(MAX_CHUNK, Math.max(MIN_CHUNK, hint));
      this.offset = 0;
      this.save();
    }

    async head() {
      const xhr = await this.send('HEAD', this.url, { 'Tus-Resumable': '1.0.0' });
      if (xhr.status !== 200) throw classify(xhr);
      this.offset = Number(xhr.getResponseHeader('upload-offset')) || 0;
      this.sha = digestHex(xhr.getResponseHeader('repr-digest')) || this.sha;
    }

    async patch() {
      const end = Math.min(this.file.size, this.offset + this.chunk);
      const xhr = await this.send('PATCH', this.url, {
        'Tus-Resumable': '1.0.0',
        'Upload-Offset': String(this.offset),
        'Content-Type': 'application/offset+octet-stream',
      }, this.file.slice(this.offset, end));
      if (xhr.status !== 204) throw classify(xhr);
      this.offset = Number(xhr.getResponseHeader('upload-offset')) || end;
      this.sha = digestHex(xhr.getResponseHeader('repr-digest')) || this.sha;
      this.attempt = 0;
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
          if (!this.url) {
            this.state('uploading', 'Starting…');
            await this.create();
          } else {
            const before = this.offset;
            await this.head();
            if (this.row.dataset.resumedFrom === undefined && this.offset > before) {
              this.row.dataset.resumedFrom = String(this.offset);
              announce(this.file.name + ': resuming at ' + fmtBytes(this.offset));
            }
          }
          this.progress(this.offset);
          while (this.offset < this.file.size) {
            if (this.paused) return;
            await this.patch();
          }
          if (!this.sha) await this.head();
          return this.done();
        } catch (e) {
          if (e instanceof Aborted) return;
          if (e instanceof Gone) {
            // The server no longer knows the upload (expired or finished long ago): anew.
            localStorage.removeItem(this.key);
            this.url = null;
            this.offset = 0;
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
        if (this.xhr) this.xhr.abort();
        this.state('paused', 'Paused at ' + fmtBytes(this.offset) + '.');
        announce(this.file.name + ': paused');
      } else {
        this.run();
      }
    }

    done() {
      $('progress', this.row).value = 100;
      this.row.dataset.sha256 = this.sha || '';
      this.row.dataset.link = this.link;
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
      if (e.code === 'signature_expired' || (e.code || '').startsWith('signature_')) linkProblem(e.message);
    }
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
