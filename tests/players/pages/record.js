// What a player test reads back from the page: window.rec (times in ms since performance.timeOrigin).
// Shared by hls.html and dash.html; the page names its player and reports steering loads, fragments
// and errors through OCA.steering / OCA.fragment / OCA.error.
"use strict";
(() => {
  const params = new URLSearchParams(location.search);
  const now = () => performance.now();
  const rec = {
    player: null,
    version: null,
    src: params.get("src"),
    header: params.get("header"),  // the lab's client header, and the address it names
    client: params.get("client"),
    sid: params.get("sid"),  // the CMCD session id the player sends to boxes
    settings: params.get("settings") || "default",  // "recommended": the lab's /lab/players.js on top
    qualities: [],        // {t, bitrate}: video quality changes rendered (dash.js only)
    responses: [],        // {t, url, status, cmsdStatic, cmsdDynamic}: media responses (dash.js only)
    firstPlaying: null,   // ms from page load to the first "playing" event
    samples: [],          // [t, currentTime, paused, ended, readyState, end of the buffered range], every 100 ms
    waiting: [],          // [start, end or null]: "waiting" until the next "playing"
    stalled: [],          // t of each "stalled" event
    events: [],           // [t, media event]
    steering: [],         // {t, url, priority}
    fragments: [],        // {t, start, url, kind}: loaded at t, requested at start
    errors: [],           // {t, fatal, detail}
  };
  window.rec = rec;

  window.OCA = {
    rec,
    // Requests to the control plane (this page's origin) carry the lab's client header; boxes never see it.
    header(url) {
      if (!rec.header || new URL(url, location.href).origin !== location.origin) return null;
      return [rec.header, rec.client];
    },
    cmcdKeys() {
      const keys = params.get("cmcdKeys");
      return keys ? { includeKeys: keys.split(",") } : {};
    },
    steering(url, priority) { rec.steering.push({ t: now(), url, priority }); },
    fragment(url, kind, start) { rec.fragments.push({ t: now(), start: start ?? now(), url, kind }); },
    error(fatal, detail) { rec.errors.push({ t: now(), fatal, detail: String(detail).slice(0, 500) }); },
    watch(video) {
      for (const type of ["loadstart", "loadedmetadata", "canplay", "playing", "waiting", "stalled", "pause",
        "seeking", "seeked", "ended", "error"]) {
        video.addEventListener(type, () => {
          const t = now();
          rec.events.push([t, type]);
          if (type === "playing") {
            if (rec.firstPlaying === null) rec.firstPlaying = t;
            const open = rec.waiting[rec.waiting.length - 1];
            if (open && open[1] === null) open[1] = t;
          } else if (type === "waiting" && rec.firstPlaying !== null) {
            const open = rec.waiting[rec.waiting.length - 1];
            if (!open || open[1] !== null) rec.waiting.push([t, null]);
          } else if (type === "stalled") {
            rec.stalled.push(t);
          } else if (type === "error") {
            OCA.error(true, `media error ${video.error && video.error.code}: ${video.error && video.error.message}`);
          }
        });
      }
      setInterval(() => {
        const b = video.buffered;
        rec.samples.push([now(), video.currentTime, video.paused, video.ended, video.readyState,
          b.length ? b.end(b.length - 1) : 0]);
      }, 100);
    },
  };
})();
