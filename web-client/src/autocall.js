// AutoCallTask: the seed project's progressive dialer. It dials a list of numbers one after
// another through a SipCall, waits for each call to end before the next, reports statistics
// every second, and optionally leaves the agent an after-call-work pause after each answered
// call. It only uses SipCall's public API (call, getState, on/off), so it works with any
// SipCall instance.

/** Task states, spelled as the seed's. */
export const TASK_STATUS = Object.freeze({ pause: 'pause', running: 'running', end: 'end' });

/** Callback types, spelled as the seed's. */
export const TASK_CALLBACK = Object.freeze({
  TaskStat: 'task_stat',
  TaskEnd: 'task_end',
  TaskPause: 'task_pause',
  CallAnswer: 'call_answer',
  CallEnd: 'call_end',
});

export class AutoCallTask {
  /**
   * `config.AutoAfterCallWork` (the seed's name; `afterCallWork` also accepted): after an
   * answered call the dialer waits for `next()` instead of dialing on, so the agent can file
   * the call; `afterCallWorkSeconds` > 0 resumes by itself after that long.
   * `callInterval` (ms, default 1000) spaces unanswered calls. `taskCallback(type, data)`
   * receives the TASK_CALLBACK types.
   */
  constructor(sipClient, config = {}, taskCallback = () => {}) {
    this.sip = sipClient;
    this.afterCallWork = Boolean(config.AutoAfterCallWork ?? config.afterCallWork);
    this.afterCallWorkSeconds = Number(config.afterCallWorkSeconds) || 0;
    this.callInterval = config.callInterval ?? 1000;
    const g = globalThis;
    this.timers = {
      setTimeout: (fn, ms) => g.setTimeout(fn, ms),
      clearTimeout: (id) => g.clearTimeout(id),
      setInterval: (fn, ms) => g.setInterval(fn, ms),
      clearInterval: (id) => g.clearInterval(id),
      now: () => Date.now(),
      ...(config.env || {}),
    };
    this.callback = taskCallback;
    this.status = TASK_STATUS.pause;
    this.queue = [];
    this.current = null; // { task, uuid, answered }
    this.inAfterCallWork = false;
    this.statTimer = null;
    this.nextTimer = null;
    this.stat = {
      status: TASK_STATUS.pause,
      total: 0,
      called: 0,
      answered: 0,
      unAnswered: 0,
      currentTask: undefined,
      startTime: null,
      duration: 0,
      runInfo: '',
    };
    this.listener = (event, data) => this.onEvent(event, data);
    this.sip.on('event', this.listener);
  }

  /** Queues one task `{phone, id, extraParam?}`. */
  addTask(task) {
    this.queue.push(task);
    this.stat.total++;
    this.report();
  }

  /** Queues several tasks at once. */
  addTasks(tasks) {
    if (!Array.isArray(tasks) || tasks.length === 0) return;
    this.queue.push(...tasks);
    this.stat.total += tasks.length;
    this.report();
  }

  /** Starts (or resumes) dialing; stats are reported every second while running. */
  start() {
    if (this.status === TASK_STATUS.running) return;
    this.setStatus(TASK_STATUS.running, '');
    if (this.stat.startTime === null) this.stat.startTime = this.timers.now();
    this.timers.clearInterval(this.statTimer);
    this.statTimer = this.timers.setInterval(() => this.report(), 1000);
    this.report();
    if (!this.current) this.next();
  }

  /** Pauses after the current call: nothing new is dialed until start(). */
  pause() {
    this.pauseTask({ source: 'user', reason: '' });
  }

  /** Ends the task for good (the current call, if any, goes on until hung up). */
  stop() {
    this.endTask();
  }

  /**
   * Dials the next number now: ends an after-call-work pause, or skips the wait between
   * calls. Does nothing while paused or while a call is in progress.
   */
  next() {
    this.timers.clearTimeout(this.nextTimer);
    this.nextTimer = null;
    if (this.status !== TASK_STATUS.running || this.current) return;
    this.inAfterCallWork = false;
    const state = this.sip.getState();
    if (state.call) {
      // The agent is on another (inbound) call; its CALL_END brings us back here.
      this.stat.runInfo = 'waiting_for_idle';
      this.report();
      return;
    }
    const task = this.queue.shift();
    if (!task) return this.endTask();
    const uuid = this.sip.call(task.phone, task.extraParam || {});
    if (!uuid) {
      // Not dialed (offline, mic, …): keep the task and let the agent decide.
      this.queue.unshift(task);
      this.pauseTask({ source: 'system', reason: 'call_failed' });
      return;
    }
    this.current = { task, uuid, answered: false };
    this.stat.called++;
    this.stat.runInfo = 'calling';
    this.report();
  }

  /** Stops listening and drops every timer and queued task. */
  destroy() {
    this.timers.clearInterval(this.statTimer);
    this.timers.clearTimeout(this.nextTimer);
    this.statTimer = this.nextTimer = null;
    this.sip.off('event', this.listener);
    this.queue = [];
    this.current = null;
  }

  /** The statistics snapshot (the same object task_stat reports). */
  getStat() {
    return this.snapshot();
  }

  onEvent(event, data) {
    switch (event) {
      case 'DISCONNECTED':
        if (this.status === TASK_STATUS.running) this.pauseTask({ source: 'system', reason: 'disconnected' });
        break;
      case 'UNREGISTERED':
        if (this.status === TASK_STATUS.running) this.pauseTask({ source: 'system', reason: 'unregistered' });
        break;
      case 'IN_CALL':
        if (this.current && data && data.callId === this.current.uuid && !this.current.answered && !data.resumed) {
          this.current.answered = true;
          this.stat.answered++;
          this.stat.runInfo = 'in_call';
          this.emit(TASK_CALLBACK.CallAnswer, this.current.task);
          this.report();
        }
        break;
      case 'CALL_END':
        this.onCallEnd(data || {});
        break;
      default:
        break;
    }
  }

  onCallEnd(data) {
    const mine = this.current && data.callId === this.current.uuid;
    if (mine) {
      const { task, answered } = this.current;
      this.current = null;
      if (!answered) this.stat.unAnswered++;
      this.emit(TASK_CALLBACK.CallEnd, {
        ...task,
        result: { answered, cause: data.cause, code: data.code, msg: data.msg },
      });
      if (answered && this.afterCallWork) {
        this.inAfterCallWork = true;
        this.stat.runInfo = 'after_call_work';
        this.report();
        if (this.afterCallWorkSeconds > 0 && this.status === TASK_STATUS.running) {
          this.nextTimer = this.timers.setTimeout(() => this.next(), this.afterCallWorkSeconds * 1000);
        }
        return;
      }
      this.report();
    }
    if (this.status === TASK_STATUS.running && !this.current && !this.inAfterCallWork) {
      this.timers.clearTimeout(this.nextTimer);
      this.nextTimer = this.timers.setTimeout(() => this.next(), this.callInterval);
    }
  }

  setStatus(status, runInfo) {
    this.status = status;
    this.stat.status = status;
    this.stat.runInfo = runInfo;
  }

  endTask() {
    if (this.status === TASK_STATUS.end) return;
    this.setStatus(TASK_STATUS.end, 'end');
    this.timers.clearInterval(this.statTimer);
    this.timers.clearTimeout(this.nextTimer);
    this.statTimer = this.nextTimer = null;
    this.report();
    this.emit(TASK_CALLBACK.TaskEnd, this.snapshot());
  }

  pauseTask(info) {
    if (this.status === TASK_STATUS.end) return;
    this.setStatus(TASK_STATUS.pause, info.reason);
    this.timers.clearInterval(this.statTimer);
    this.timers.clearTimeout(this.nextTimer);
    this.statTimer = this.nextTimer = null;
    this.report();
    this.emit(TASK_CALLBACK.TaskPause, info);
  }

  snapshot() {
    const stat = { ...this.stat, currentTask: this.current ? this.current.task : undefined };
    if (stat.startTime !== null) stat.duration = Math.floor((this.timers.now() - stat.startTime) / 1000);
    return stat;
  }

  report() {
    this.emit(TASK_CALLBACK.TaskStat, this.snapshot());
  }

  emit(type, data) {
    try {
      this.callback(type, data);
    } catch (error) {
      console.error('[sipcall] an AutoCallTask callback threw', error);
    }
  }
}
