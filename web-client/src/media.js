// The browser's side of the audio: the microphone, one RTCPeerConnection per call, and the
// <audio> element the far end plays in. callgate is ICE-lite and learns the browser's address
// from its first STUN check, so offers and answers go out without waiting for candidates.

/** Which MIC_ERROR text fits a getUserMedia failure (its DOMException name). */
export function micErrorKey(error) {
  const name = error && error.name;
  if (name === 'NotAllowedError' || name === 'SecurityError' || name === 'PermissionDeniedError') {
    return 'mic_denied';
  }
  if (name === 'NotFoundError' || name === 'OverconstrainedError' || name === 'DevicesNotFoundError') {
    return 'mic_missing';
  }
  return 'mic_unavailable';
}

/**
 * Opens the microphone (the chosen device when one is set). Rejects with an Error whose
 * `micKey` names the MIC_ERROR text, so callers can report it without inspecting DOM errors.
 */
export async function openMicrophone(env, deviceId) {
  if (!env.mediaDevices || typeof env.mediaDevices.getUserMedia !== 'function') {
    const error = new Error('navigator.mediaDevices is missing (not a secure context?)');
    error.micKey = 'mic_unavailable';
    throw error;
  }
  const audio = deviceId
    ? { deviceId: { exact: deviceId }, echoCancellation: true, noiseSuppression: true }
    : { echoCancellation: true, noiseSuppression: true };
  try {
    return await env.mediaDevices.getUserMedia({ audio, video: false });
  } catch (cause) {
    const error = new Error(`getUserMedia failed: ${cause && cause.name}`);
    error.micKey = micErrorKey(cause);
    throw error;
  }
}

/** Stops every track of a stream (releases the microphone light). */
export function stopStream(stream) {
  if (!stream) return;
  for (const track of stream.getTracks()) track.stop();
}

/**
 * A peer connection for one call whose remote audio plays in `audio`. `onState` receives
 * connectionState changes so SipCall can report a failed ICE/DTLS leg.
 */
export function createPeer(env, { iceServers, audio, onState }) {
  const pc = new env.RTCPeerConnection({
    iceServers: iceServers || [],
    bundlePolicy: 'max-bundle',
    rtcpMuxPolicy: 'require',
  });
  pc.ontrack = (event) => {
    const stream = (event.streams && event.streams[0]) || new env.MediaStream([event.track]);
    if (audio) {
      audio.srcObject = stream;
      const playing = audio.play && audio.play();
      if (playing && playing.catch) playing.catch(() => {});
    }
  };
  pc.onconnectionstatechange = () => onState && onState(pc.connectionState);
  return pc;
}

/** Adds the microphone and creates the offer for a `call` request. */
export async function makeOffer(pc, stream) {
  for (const track of stream.getAudioTracks()) pc.addTrack(track, stream);
  const offer = await pc.createOffer({ offerToReceiveAudio: true });
  await pc.setLocalDescription(offer);
  return pc.localDescription ? pc.localDescription.sdp : offer.sdp;
}

/** Applies callgate's offer from `incoming_call` and creates the answer for `answer`. */
export async function makeAnswer(pc, offerSdp, stream) {
  await pc.setRemoteDescription({ type: 'offer', sdp: offerSdp });
  for (const track of stream.getAudioTracks()) pc.addTrack(track, stream);
  const answer = await pc.createAnswer();
  await pc.setLocalDescription(answer);
  return pc.localDescription ? pc.localDescription.sdp : answer.sdp;
}

/** Closes a call's peer connection and microphone and silences its audio element. */
export function closePeer(pc, stream, audio) {
  if (pc) {
    pc.ontrack = null;
    pc.onconnectionstatechange = null;
    try {
      pc.close();
    } catch {
      // already closed
    }
  }
  stopStream(stream);
  if (audio && audio.srcObject) audio.srcObject = null;
}

/** Enables or disables the microphone tracks (local half of mute). */
export function setMicEnabled(stream, enabled) {
  if (!stream) return;
  for (const track of stream.getAudioTracks()) track.enabled = enabled;
}
