// Compiled (never run) by test/types.test.js with `tsc --strict`: the seed-style usage of the
// SDK, the bar and the generated protocol types must type-check against the declarations.

import SipCall, { AutoCallTask, describeFailure, type CallEndEvent, type CallQuality, type LatencyStatEvent } from '../../src/sipcall';
import type { ClientRequest, ServerMessage } from '../../src/protocol';
import { mount, type Softphone } from '../../bar/softphone';

const sip = new SipCall({
  host: '10.133.35.89',
  port: '5066',
  proto: true,
  extNo: '1001',
  extPwd: '123456',
  autoRegister: true,
  stateEventListener: (event, data) => {
    if (event === 'CALL_END') console.log((data as CallEndEvent).code, (data as CallEndEvent).quality?.webrtc.rtt_ms ?? 0);
  },
});
sip.on('LATENCY_STAT', (stat: LatencyStatEvent) => console.log(stat.latencyTime, stat.upLossRate));
sip.on('INCOMING_CALL', (call) => console.log(call.otherLegNumber, call.headers['X-Customer-Id']));
sip.on('event', (event, data) => console.log(event, data));
sip.on('CALL_END', (end) => {
  const quality: CallQuality | undefined = end.quality;
  if (quality) console.log(quality.mos.toFixed(1), quality.sip.lost / Math.max(1, quality.sip.packets + quality.sip.lost));
});
const uuid: string | null = sip.call('17300000001', { businessId: 'order-4711' });
sip.hold();
sip.sendDtmf('1#');
sip.reject('decline');
void SipCall.testMicrophone((level: number) => console.log(level)).then((t) => t.yes());

const task = new AutoCallTask(sip, { AutoAfterCallWork: true }, (type, data) => {
  if (type === 'task_stat') console.log(data);
});
task.addTasks([{ id: '1', phone: '1002' }]);
task.start();
console.log(describeFailure({ sipStatus: 486 }, 'vi'), uuid);

const request: ClientRequest = { type: 'dtmf', call_id: 'c-1', digits: '12' };
function onServer(msg: ServerMessage): string {
  switch (msg.type) {
    case 'call_ended':
      return `${msg.cause} ${msg.sip_status ?? 0} ${msg.ended_by} ${msg.quality?.mos ?? '-'}`;
    case 'incoming_call':
      return msg.from;
    default:
      return msg.type;
  }
}
console.log(request, onServer);

const phone: Softphone = mount(document.body, { lang: 'vi', customerCard: (caller) => `<b>${caller.otherLegNumber}</b>` });
phone.setCustomerCard(null);
document.querySelector('callgate-phone')?.addEventListener('callgate-event', (e) => console.log(e.detail.event));
