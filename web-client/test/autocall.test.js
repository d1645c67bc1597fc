// AutoCallTask, the progressive dialer, driven by a real SipCall on a fake callgate: the dialer
// sees exactly the events an integrator's page would.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { AutoCallTask, TASK_STATUS } from '../src/autocall.js';
import { settle } from '../test-support/fakes.js';
import { connected } from '../test-support/helpers.js';

/** A dialer over a connected SipCall, recording callbacks by type. */
async function dialer(config = {}) {
  const t = await connected();
  const log = [];
  const task = new AutoCallTask(
    t.sip,
    { callInterval: 1000, env: { setTimeout: t.clock.setTimeout, clearTimeout: t.clock.clearTimeout, setInterval: t.clock.setInterval, clearInterval: t.clock.clearInterval, now: () => t.clock.now }, ...config },
    (type, data) => log.push({ type, data }),
  );
  const of = (type) => log.filter((e) => e.type === type).map((e) => e.data);
  let next = 1;
  /** The gateway acks the pending call request and returns its call_id. */
  const ackCall = async () => {
    const id = `c-${next++}`;
    t.ws().ack('call', { call_id: id, sdp: 'v=0\r\n' });
    await settle();
    return id;
  };
  const end = async (callId, answered, extra = {}) => {
    t.ws().serverSend({ type: 'call_ended', call_id: callId, ended_by: 'remote', cause: answered ? 'normal_clearing' : 'busy', sip_status: answered ? undefined : 486, reason: 'x', answered, ...extra });
    await settle();
  };
  const answer = async (callId) => {
    t.ws().serverSend({ type: 'call_answered', call_id: callId });
    await settle();
  };
  const dialed = () => t.ws().sent.filter((m) => m.type === 'call').map((m) => m.to);
  return { t, task, log, of, ackCall, end, answer, dialed };
}

test('dials the list in order, one call at a time, counting answered and unanswered', async () => {
  const d = await dialer();
  d.task.addTask({ id: 'a', phone: '1001' });
  d.task.addTasks([{ id: 'b', phone: '1002' }, { id: 'c', phone: '1003' }]);
  d.task.start();
  await settle();
  assert.deepEqual(d.dialed(), ['1001']);

  let id = await d.ackCall();
  await d.answer(id);
  assert.deepEqual(d.of('call_answer'), [{ id: 'a', phone: '1001' }]);
  await d.end(id, true);
  assert.deepEqual(d.dialed(), ['1001'], 'waits callInterval before the next number');
  await d.t.clock.advance(1000);
  assert.deepEqual(d.dialed(), ['1001', '1002']);

  id = await d.ackCall();
  await d.end(id, false);
  await d.t.clock.advance(1000);
  id = await d.ackCall();
  await d.end(id, false);
  await d.t.clock.advance(1000);

  const [ended] = d.of('task_end');
  assert.equal(ended.status, TASK_STATUS.end);
  assert.deepEqual(
    { total: ended.total, called: ended.called, answered: ended.answered, unAnswered: ended.unAnswered },
    { total: 3, called: 3, answered: 1, unAnswered: 2 },
  );
  const callEnds = d.of('call_end');
  assert.deepEqual(callEnds.map((e) => [e.id, e.result.answered, e.result.code]), [
    ['a', true, 0],
    ['b', false, 486],
    ['c', false, 486],
  ]);
});

test('task_stat is reported every second while running, with the duration', async () => {
  const d = await dialer();
  d.task.addTask({ id: 'a', phone: '1001' });
  d.task.start();
  await settle();
  const before = d.of('task_stat').length;
  await d.t.clock.advance(3000);
  const stats = d.of('task_stat');
  assert.equal(stats.length - before, 3);
  assert.equal(stats.at(-1).duration, 3);
  assert.deepEqual(stats.at(-1).currentTask, { id: 'a', phone: '1001' });
});

test('after-call work: an answered call pauses dialing until next(), or for afterCallWorkSeconds', async () => {
  const d = await dialer({ AutoAfterCallWork: true });
  d.task.addTasks([{ id: 'a', phone: '1001' }, { id: 'b', phone: '1002' }, { id: 'c', phone: '1003' }]);
  d.task.start();
  await settle();
  let id = await d.ackCall();
  await d.answer(id);
  await d.end(id, true);
  await d.t.clock.advance(60000);
  assert.deepEqual(d.dialed(), ['1001'], 'nothing dialed during after-call work');
  assert.equal(d.of('task_stat').at(-1).runInfo, 'after_call_work');
  d.task.next();
  await settle();
  assert.deepEqual(d.dialed(), ['1001', '1002']);

  const timed = await dialer({ afterCallWork: true, afterCallWorkSeconds: 5 });
  timed.task.addTasks([{ id: 'a', phone: '1001' }, { id: 'b', phone: '1002' }]);
  timed.task.start();
  await settle();
  id = await timed.ackCall();
  await timed.answer(id);
  await timed.end(id, true);
  await timed.t.clock.advance(4999);
  assert.deepEqual(timed.dialed(), ['1001']);
  await timed.t.clock.advance(1);
  assert.deepEqual(timed.dialed(), ['1001', '1002']);
});

test('pause() lets the current call finish and dials nothing more until start()', async () => {
  const d = await dialer();
  d.task.addTasks([{ id: 'a', phone: '1001' }, { id: 'b', phone: '1002' }]);
  d.task.start();
  await settle();
  const id = await d.ackCall();
  d.task.pause();
  assert.deepEqual(d.of('task_pause'), [{ source: 'user', reason: '' }]);
  await d.end(id, false);
  await d.t.clock.advance(10000);
  assert.deepEqual(d.dialed(), ['1001']);
  d.task.start();
  await settle();
  assert.deepEqual(d.dialed(), ['1001', '1002']);
});

test('a lost connection pauses the task (system) and a call that cannot start keeps its task', async () => {
  const d = await dialer();
  d.task.addTasks([{ id: 'a', phone: '1001' }, { id: 'b', phone: '1002' }]);
  d.task.start();
  await settle();
  await d.ackCall();
  d.t.ws().serverDrop();
  await settle();
  assert.deepEqual(d.of('task_pause').at(-1), { source: 'system', reason: 'disconnected' });
  assert.equal(d.of('call_end').length, 1, 'the dropped call still reports call_end');
  d.task.start(); // still offline: the call cannot be placed
  await settle();
  assert.deepEqual(d.of('task_pause').at(-1), { source: 'system', reason: 'call_failed' });
  await d.t.clock.advance(1000);
  d.t.ws().welcome();
  await settle();
  d.task.start();
  await settle();
  assert.deepEqual(d.dialed(), ['1002'], 'the task that could not be dialed is dialed after reconnecting');
});

test('stop() ends the task at once; destroy() stops listening', async () => {
  const d = await dialer();
  d.task.addTasks([{ id: 'a', phone: '1001' }, { id: 'b', phone: '1002' }]);
  d.task.start();
  await settle();
  const id = await d.ackCall();
  d.task.stop();
  assert.equal(d.of('task_end').length, 1);
  await d.end(id, false);
  await d.t.clock.advance(5000);
  assert.deepEqual(d.dialed(), ['1001']);
  d.task.destroy();
  const count = d.log.length;
  d.t.sip.call('1009');
  await settle();
  d.t.ws().serverDrop();
  await settle();
  assert.equal(d.log.length, count, 'no callbacks after destroy');
});

test('an inbound call taken while running delays the next number until it ends', async () => {
  const d = await dialer();
  d.task.addTasks([{ id: 'a', phone: '1001' }, { id: 'b', phone: '1002' }]);
  d.task.start();
  await settle();
  const id = await d.ackCall();
  await d.end(id, false);
  d.t.ws().serverSend({ type: 'incoming_call', call_id: 'c-in', from: '555', to: '1001', sdp: 'v=0\r\n' });
  await settle();
  await d.t.clock.advance(1000);
  assert.deepEqual(d.dialed(), ['1001'], 'not dialed while the inbound call rings');
  d.t.ws().serverSend({ type: 'call_ended', call_id: 'c-in', ended_by: 'remote', cause: 'cancelled', reason: 'x', answered: false });
  await settle();
  await d.t.clock.advance(1000);
  assert.deepEqual(d.dialed(), ['1001', '1002']);
});
