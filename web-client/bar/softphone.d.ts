// Type declarations of the softphone bar (bar/softphone.js, dist/softphone.mjs, and the classic
// dist/softphone.js which defines the global `CallgateSoftphone`).

import SipCall, { IncomingCallEvent, Language, ExtraParam, SipCallEventName } from '../src/sipcall';

export { SipCall };

/** What the CRM's hook returns for the incoming-call popup. */
export type CustomerCard = Node | string | null | undefined;

export interface SoftphoneOptions {
  /** callgate's WebSocket URL (default: where the script came from, else the page's host). */
  url?: string;
  host?: string;
  port?: string | number;
  proto?: boolean;
  path?: string;
  lang?: Language | string;
  /** Prefill the login form. */
  extNo?: string;
  extPwd?: string;
  /**
   * Token mode (the gateway looks the SIP password up; the page never holds it): a JWT minted
   * by the CRM backend, and/or an async source of fresh ones (as SipCall's `token` /
   * `getToken`). The login form then asks only for the extension and nothing secret is stored.
   */
  token?: string;
  getToken?: () => Promise<string> | string;
  /** With extNo and extPwd (or token mode): log in at once. */
  autoLogin?: boolean;
  /** Register after login (default true) so inbound calls ring the bar. */
  autoRegister?: boolean;
  /** The incoming-call popup's customer card. */
  customerCard?: (caller: IncomingCallEvent) => CustomerCard | Promise<CustomerCard>;
  /** Every SDK event, as the SDK's stateEventListener. */
  onEvent?: (event: SipCallEventName, data: unknown) => void;
  /** X- headers for outbound calls, or a function of the dialled number. */
  extraParam?: ExtraParam | ((number: string) => ExtraParam);
  /** Where "remember me" stores credentials (default localStorage; null disables it). */
  storage?: Pick<Storage, 'getItem' | 'setItem' | 'removeItem'> | null;
  /**
   * Where the tab's login is kept so a reload logs in again and resumes a call callgate kept
   * (default sessionStorage; null disables it).
   */
  sessionStorage?: Pick<Storage, 'getItem' | 'setItem' | 'removeItem'> | null;
  iceServers?: RTCIceServer[];
  debug?: boolean;
}

export class Softphone {
  constructor(host: HTMLElement, root: ShadowRoot | HTMLElement, options?: SoftphoneOptions);
  /** The logged-in agent's SipCall, null before login. */
  readonly sipCall: SipCall | null;
  /** In token mode `extPwd` is ignored. */
  login(extNo: string, extPwd: string | undefined, remember: boolean): void;
  logout(): void;
  setLanguage(lang: Language | string): void;
  setCustomerCard(fn: ((caller: IncomingCallEvent) => CustomerCard | Promise<CustomerCard>) | null): void;
  destroy(): void;
}

/** localStorage key used by "remember me". */
export const STORAGE_KEY: string;

/** sessionStorage key of the tab's login (reload → log in again → resume). */
export const SESSION_KEY: string;

/** Renders the bar into `target` (in a shadow root) and returns its controller. */
export function mount(target: HTMLElement, options?: SoftphoneOptions): Softphone;

/** Registers `<callgate-phone>` (done on load); attributes: server, lang, extension, auto-register. */
export function defineElement(name?: string): void;

/** Localized text of one message-table entry. */
export function messageText(key: string, lang?: Language): string;

/** `<callgate-phone>`: its `phone` property is the controller. */
export interface CallgatePhoneElement extends HTMLElement {
  phone: Softphone | null;
}

declare global {
  interface HTMLElementTagNameMap {
    'callgate-phone': CallgatePhoneElement;
  }
  interface HTMLElementEventMap {
    'callgate-event': CustomEvent<{ event: SipCallEventName; data: unknown }>;
    'callgate-incoming': CustomEvent<IncomingCallEvent>;
  }
}
