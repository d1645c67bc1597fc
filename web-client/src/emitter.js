// Event fan-out with the seed SDK's two listener styles: the config's
// `stateEventListener(event, data)`, `on('event', (event, data) => …)` for every event, and
// `on('CALL_END', (data) => …)` for one event. A throwing listener is reported to the console
// and never breaks the SDK or the other listeners.

/** Fans events out to listeners; owned by one SipCall. */
export class Emitter {
  /** `catchAll` is the config's stateEventListener (may be undefined). */
  constructor(catchAll, log) {
    this.catchAll = typeof catchAll === 'function' ? catchAll : null;
    this.listeners = new Map();
    this.log = log;
  }

  /** Adds a listener; `name` is an event name or 'event' for all of them. */
  on(name, fn) {
    if (typeof fn !== 'function') return;
    if (!this.listeners.has(name)) this.listeners.set(name, []);
    this.listeners.get(name).push(fn);
  }

  /** Removes one listener added with `on`; unknown listeners are ignored. */
  off(name, fn) {
    const list = this.listeners.get(name);
    if (!list) return;
    const index = list.indexOf(fn);
    if (index !== -1) list.splice(index, 1);
  }

  /** Drops every listener (cleanSDK), so a cleaned SDK calls nobody back. */
  clear() {
    this.catchAll = null;
    this.listeners.clear();
  }

  /** Delivers one event: the catch-all first, then 'event' listeners, then named ones. */
  emit(event, data) {
    const call = (fn, args) => {
      try {
        fn(...args);
      } catch (error) {
        this.log.error(`a ${event} listener threw`, error);
      }
    };
    if (this.catchAll) call(this.catchAll, [event, data]);
    for (const fn of [...(this.listeners.get('event') || [])]) call(fn, [event, data]);
    for (const fn of [...(this.listeners.get(event) || [])]) call(fn, [data]);
  }
}
