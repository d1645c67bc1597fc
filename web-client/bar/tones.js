// Call-progress tones synthesized with WebAudio, so the bar ships no sound files: the
// ringtone for an incoming call, ringback while the far end rings, and the DTMF key tones.

/** DTMF row/column frequencies (ITU-T Q.23) per key. */
export const DTMF_FREQUENCIES = {
  1: [697, 1209], 2: [697, 1336], 3: [697, 1477], A: [697, 1633],
  4: [770, 1209], 5: [770, 1336], 6: [770, 1477], B: [770, 1633],
  7: [852, 1209], 8: [852, 1336], 9: [852, 1477], C: [852, 1633],
  '*': [941, 1209], 0: [941, 1336], '#': [941, 1477], D: [941, 1633],
};

/** Cadences in seconds: [frequencies, on, period]. */
const RINGBACK = { freqs: [440, 480], on: 2, period: 6 };
const RINGTONE = { freqs: [1000, 1250], on: 1.2, period: 3, warble: 0.1 };

/** Plays one tone at a time; the AudioContext is made on first use (after a user gesture). */
export class Tones {
  constructor(volume = 0.15) {
    this.volume = volume;
    this.context = null;
    this.loop = null;
  }

  ctx() {
    const Context = globalThis.AudioContext || globalThis.webkitAudioContext;
    if (!Context) return null;
    if (!this.context) this.context = new Context();
    if (this.context.state === 'suspended') this.context.resume().catch(() => {});
    return this.context;
  }

  /** Plays `freqs` together for `seconds`, starting `at` (context time). */
  burst(freqs, seconds, at, warble = 0) {
    const ctx = this.ctx();
    if (!ctx) return;
    const start = at ?? ctx.currentTime;
    const gain = ctx.createGain();
    gain.gain.setValueAtTime(0, start);
    gain.gain.linearRampToValueAtTime(this.volume, start + 0.01);
    gain.gain.setValueAtTime(this.volume, start + seconds - 0.02);
    gain.gain.linearRampToValueAtTime(0, start + seconds);
    gain.connect(ctx.destination);
    if (warble) {
      // Alternate the two frequencies (a classic electronic ring) instead of mixing them.
      const osc = ctx.createOscillator();
      for (let t = 0, i = 0; t < seconds; t += warble, i++) osc.frequency.setValueAtTime(freqs[i % 2], start + t);
      osc.connect(gain);
      osc.start(start);
      osc.stop(start + seconds);
      return;
    }
    for (const f of freqs) {
      const osc = ctx.createOscillator();
      osc.frequency.value = f;
      osc.connect(gain);
      osc.start(start);
      osc.stop(start + seconds);
    }
  }

  /** Starts a repeating cadence (stopping any other). */
  repeat({ freqs, on, period, warble }) {
    this.stop();
    const play = () => this.burst(freqs, on, undefined, warble);
    play();
    this.loop = setInterval(play, period * 1000);
  }

  /** Incoming call: loops until stop(). */
  ringtone() {
    this.repeat(RINGTONE);
  }

  /** Far end ringing: loops until stop(). */
  ringback() {
    this.repeat(RINGBACK);
  }

  /** One key press (120 ms). */
  key(digit) {
    const freqs = DTMF_FREQUENCIES[String(digit).toUpperCase()];
    if (freqs) this.burst(freqs, 0.12);
  }

  /** Stops the looping tone (key tones end by themselves). */
  stop() {
    if (this.loop) clearInterval(this.loop);
    this.loop = null;
  }

  /** Stops everything and releases the audio device. */
  close() {
    this.stop();
    if (this.context) this.context.close().catch(() => {});
    this.context = null;
  }
}
