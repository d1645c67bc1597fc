// React: the softphone bar as a component, and a hook for the SDK alone. Works with any
// bundler that resolves the npm package (`@callgate/sipcall`), or load
// https://CALLGATE/sdk/softphone.mjs with an import map. Readable without a build step.

import { useEffect, useRef, useState } from 'react';
import { mount } from '@callgate/sipcall/softphone';
import SipCall from '@callgate/sipcall';

/** The full bar; `onIncoming(caller)` returns the customer card (string or DOM node). */
export function SoftphoneBar({ server, lang = 'en', onIncoming, onEvent }) {
  const host = useRef(null);
  useEffect(() => {
    const phone = mount(host.current, { url: server, lang, customerCard: onIncoming, onEvent });
    return () => phone.destroy();
  }, [server, lang]); // eslint-disable-line react-hooks/exhaustive-deps
  return <div ref={host} />;
}

/** The SDK alone: one SipCall for the component's lifetime, and its latest state. */
export function useSipCall(config) {
  const [sip, setSip] = useState(null);
  const [state, setState] = useState({ event: 'DISCONNECTED', data: null });
  useEffect(() => {
    const client = new SipCall({ ...config, stateEventListener: (event, data) => setState({ event, data }) });
    setSip(client);
    return () => client.cleanSDK();
  }, [config.host, config.extNo]); // eslint-disable-line react-hooks/exhaustive-deps
  return [sip, state];
}

// Usage:
//   <SoftphoneBar server="wss://CALLGATE/ws" lang="vi"
//     onIncoming={(caller) => `<b>Customer ${caller.headers['X-Customer-Id'] ?? caller.otherLegNumber}</b>`} />
//
//   const [sip, { event, data }] = useSipCall({ host: 'CALLGATE', port: 443, proto: true, extNo, extPwd, autoRegister: true });
//   <button onClick={() => sip.call('0912345678', { businessId: orderId })}>Call</button>
//   {event === 'CALL_END' && <p>{data.msg}</p>}
