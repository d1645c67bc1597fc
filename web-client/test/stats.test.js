// LATENCY_STAT arithmetic and the network-quality grading the softphone bar shows.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { emptySample, latencyStat, qualityBars } from '../src/stats.js';

test('round-trip time comes from the selected candidate pair, else from RTCP', () => {
  const pairReports = [
    { id: 'T', type: 'transport', selectedCandidatePairId: 'B' },
    { id: 'A', type: 'candidate-pair', currentRoundTripTime: 0.5 },
    { id: 'B', type: 'candidate-pair', currentRoundTripTime: 0.0306 },
    { id: 'R', type: 'remote-inbound-rtp', kind: 'audio', roundTripTime: 0.2 },
  ];
  assert.equal(latencyStat(emptySample(), pairReports).stat.latencyTime, 31);
  assert.equal(latencyStat(emptySample(), [pairReports[3]]).stat.latencyTime, 200);
  assert.equal(latencyStat(emptySample(), []).stat.latencyTime, 0);
});

test('loss is computed per interval from counter deltas, falling back to RTCP fractionLost', () => {
  const at = (sent, upLost, received, downLost) => [
    { type: 'outbound-rtp', kind: 'audio', packetsSent: sent },
    { type: 'remote-inbound-rtp', kind: 'audio', packetsLost: upLost, fractionLost: 0.02 },
    { type: 'inbound-rtp', kind: 'audio', packetsReceived: received, packetsLost: downLost },
  ];
  const first = latencyStat(emptySample(), at(100, 0, 100, 0));
  assert.equal(first.stat.upLossRate, 0.02, 'no counted loss yet: RTCP fraction');
  assert.equal(first.stat.downLossRate, 0);
  const second = latencyStat(first.sample, at(150, 10, 140, 10));
  assert.equal(second.stat.upLossRate, 10 / 60);
  assert.equal(second.stat.downLossRate, 10 / 50);
  const third = latencyStat(second.sample, at(200, 10, 190, 10));
  assert.equal(third.stat.downLossRate, 0, 'old loss does not linger');
});

test('audio levels come from media-source (up) and inbound-rtp (down), clamped to 0..1; video is ignored', () => {
  const { stat } = latencyStat(emptySample(), [
    { type: 'media-source', kind: 'audio', audioLevel: 0.3 },
    { type: 'inbound-rtp', kind: 'audio', audioLevel: 1.7 },
    { type: 'inbound-rtp', kind: 'video', packetsReceived: 999, packetsLost: 500 },
  ]);
  assert.deepEqual(stat, { latencyTime: 0, upLossRate: 0, downLossRate: 0, upAudioLevel: 0.3, downAudioLevel: 1 });
});

test('quality bars: the worse of latency and loss wins', () => {
  assert.equal(qualityBars({ latencyTime: 40, upLossRate: 0, downLossRate: 0 }), 4);
  assert.equal(qualityBars({ latencyTime: 200, upLossRate: 0, downLossRate: 0 }), 3);
  assert.equal(qualityBars({ latencyTime: 40, upLossRate: 0, downLossRate: 0.04 }), 2);
  assert.equal(qualityBars({ latencyTime: 900, upLossRate: 0, downLossRate: 0 }), 1);
  assert.equal(qualityBars({ latencyTime: 40, upLossRate: 0.3, downLossRate: 0 }), 0);
});
