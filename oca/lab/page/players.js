// The player settings OCA recommends (README, "Player settings"), shared by the lab page and the player
// tests: how long a player waits on a box that hangs before it moves to the next pathway.
//
// A box that dies resets its connections and players move at once. A box that hangs answers nothing: the
// box's own watchdog (systemd WatchdogSec, the lab's supervisor) kills it within a few seconds, and
// until then only the player's own timeouts bound the wait. The defaults are built for origins far away
// (hls.js waits 10 s for a first byte, dash.js 20 s for a whole segment, then retries the same URL), while
// a box answers a hit's first byte in milliseconds and a miss within fetch.first_byte_timeout (5 s) of its
// upstream, and every object is on every pathway: giving up early on one box costs a request elsewhere.
"use strict";
window.OCA_PLAYERS = {
  hls: {
    fragLoadPolicy: {
      default: {
        // No first byte in 4 s: the box is not answering (a miss's upstream answers within 5 s, and a
        // retry joins the same fill). A whole 2 s segment in 8 s, or the link cannot play this rung anyway.
        maxTimeToFirstByteMs: 4000,
        maxLoadTimeMs: 8000,
        // A timeout or an error is retried once at once, then the fragment goes to another level/pathway
        // (hls.js's error controller); the defaults retry 4-6 times with backoff up to 8 s.
        timeoutRetry: { maxNumRetry: 1, retryDelayMs: 0, maxRetryDelayMs: 0 },
        errorRetry: { maxNumRetry: 1, retryDelayMs: 250, maxRetryDelayMs: 500 },
      },
    },
  },
  dash: {
    streaming: {
      // dash.js aborts a segment request after fragmentRequestTimeout (default 20 s) and retries the same
      // BaseURL retryAttempts times (default 3, 1 s apart) before it moves to the next one: 4 s and 2 attempts
      // 250 ms apart (measured: 8-9 s of stall on a hung box nothing kills, against 35 s and no recovery).
      fragmentRequestTimeout: 4000,
      retryIntervals: { MediaSegment: 250, InitializationSegment: 250 },
      retryAttempts: { MediaSegment: 2, InitializationSegment: 2 },
      // CMSD (CTA-5006) from the boxes: a box in duress or draining sends `mb`, the highest bitrate it
      // suggests, and dash.js keeps its video at or under it (applyMb). The box's `etp` is its transport's
      // estimate (TCP's cwnd over RTT), not weighed in (etpWeightRatio 0): dash.js's own measurement of
      // the bytes it received stays what its ABR trusts.
      cmsd: { enabled: true, abr: { applyMb: true, etpWeightRatio: 0 } },
    },
  },
};
