// LATENCY_STAT from RTCPeerConnection.getStats(): round-trip time, loss both ways and audio
// levels, computed over the last interval (not since the call began) so the network-quality
// indicator reacts to what is happening now. Pure: reports in, numbers out.

/** Keeps the counters of one sample so the next one can compute per-interval loss. */
export function emptySample() {
  return { upSent: 0, upLost: 0, downReceived: 0, downLost: 0 };
}

/**
 * Turns one getStats() report list into the seed's LATENCY_STAT payload plus the counters
 * for the next call. Works with any iterable of stat objects (an RTCStatsReport's values).
 */
export function latencyStat(previous, reports) {
  let rtt;
  let pairRtt;
  let selectedPairId;
  let upFraction;
  const sample = emptySample();
  let upAudioLevel = 0;
  let downAudioLevel = 0;
  const pairs = new Map();
  for (const r of reports) {
    if (!r || r.kind === 'video') continue;
    switch (r.type) {
      case 'transport':
        if (r.selectedCandidatePairId) selectedPairId = r.selectedCandidatePairId;
        break;
      case 'candidate-pair':
        pairs.set(r.id, r);
        break;
      case 'remote-inbound-rtp':
        if (typeof r.roundTripTime === 'number') rtt = r.roundTripTime;
        if (typeof r.fractionLost === 'number') upFraction = r.fractionLost;
        if (typeof r.packetsLost === 'number') sample.upLost = r.packetsLost;
        break;
      case 'outbound-rtp':
        if (typeof r.packetsSent === 'number') sample.upSent = r.packetsSent;
        break;
      case 'inbound-rtp':
        if (typeof r.packetsReceived === 'number') sample.downReceived = r.packetsReceived;
        if (typeof r.packetsLost === 'number') sample.downLost = Math.max(0, r.packetsLost);
        if (typeof r.audioLevel === 'number') downAudioLevel = r.audioLevel;
        break;
      case 'media-source':
        if (typeof r.audioLevel === 'number') upAudioLevel = r.audioLevel;
        break;
      default:
        break;
    }
  }
  const pair =
    (selectedPairId && pairs.get(selectedPairId)) ||
    [...pairs.values()].find((p) => p.nominated && p.state === 'succeeded');
  if (pair && typeof pair.currentRoundTripTime === 'number') pairRtt = pair.currentRoundTripTime;
  const seconds = pairRtt ?? rtt;

  const upSent = sample.upSent - previous.upSent;
  const upLost = sample.upLost - previous.upLost;
  let upLossRate = 0;
  if (upSent > 0 && upLost > 0) upLossRate = upLost / (upSent + upLost);
  else if (upFraction !== undefined) upLossRate = upFraction;

  const downReceived = sample.downReceived - previous.downReceived;
  const downLost = sample.downLost - previous.downLost;
  const downLossRate = downLost > 0 ? downLost / (downReceived + downLost) : 0;

  return {
    stat: {
      latencyTime: seconds === undefined ? 0 : Math.round(seconds * 1000),
      upLossRate: clamp01(upLossRate),
      downLossRate: clamp01(downLossRate),
      upAudioLevel: clamp01(upAudioLevel),
      downAudioLevel: clamp01(downAudioLevel),
    },
    sample,
  };
}

/**
 * Grades a LATENCY_STAT into 0-4 bars for the network-quality indicator: latency and loss
 * as an agent hears them (150 ms / 1 % is good, 400 ms / 5 % is poor), the worse one wins.
 */
export function qualityBars({ latencyTime, upLossRate, downLossRate }) {
  const loss = Math.max(upLossRate, downLossRate);
  const byLatency = latencyTime <= 150 ? 4 : latencyTime <= 250 ? 3 : latencyTime <= 400 ? 2 : 1;
  const byLoss = loss <= 0.01 ? 4 : loss <= 0.03 ? 3 : loss <= 0.05 ? 2 : loss <= 0.15 ? 1 : 0;
  return Math.min(byLatency, byLoss);
}

function clamp01(value) {
  if (!Number.isFinite(value) || value < 0) return 0;
  return value > 1 ? 1 : value;
}
