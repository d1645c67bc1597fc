// The softphone bar's stylesheet, scoped by its shadow root so a CRM page's CSS cannot break
// it and it cannot break the page. Colours are CSS variables a host page may override.

export const STYLE = `
:host { all: initial; display: block; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", "Noto Sans", sans-serif;
  --cg-bg: #ffffff; --cg-fg: #1d2330; --cg-muted: #667085; --cg-line: #d5dbe6; --cg-accent: #2563eb;
  --cg-green: #16a34a; --cg-red: #dc2626; --cg-amber: #d97706; color: var(--cg-fg); }
* { box-sizing: border-box; }
[hidden] { display: none !important; }
.bar { position: relative; width: 100%; max-width: 22rem; background: var(--cg-bg); border: 1px solid var(--cg-line);
  border-radius: 12px; padding: .75rem; box-shadow: 0 4px 18px rgba(16, 24, 40, .08); }
header { display: flex; align-items: center; gap: .45rem; margin-bottom: .2rem; }
header .title { font-weight: 650; }
header .spacer { flex: 1; }
.statusline { display: flex; align-items: center; gap: .45rem; margin-bottom: .6rem; min-height: 14px; }
.statusline [data-role=status] { flex: 1; color: var(--cg-muted); font-size: 12px; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.dot { width: .6rem; height: .6rem; border-radius: 50%; background: var(--cg-muted); flex: none; }
.dot[data-state=registered], .dot[data-state=connected] { background: var(--cg-green); }
.dot[data-state=connecting], .dot[data-state=reconnecting] { background: var(--cg-amber); }
.dot[data-state=disconnected] { background: var(--cg-red); }
.net { display: inline-flex; align-items: flex-end; gap: 2px; height: 14px; }
.net i { width: 4px; background: var(--cg-line); border-radius: 1px; }
.net i:nth-child(1) { height: 4px; } .net i:nth-child(2) { height: 7px; } .net i:nth-child(3) { height: 10px; } .net i:nth-child(4) { height: 14px; }
.net[data-bars="1"] i:nth-child(-n+1) { background: var(--cg-red); }
.net[data-bars="2"] i:nth-child(-n+2) { background: var(--cg-amber); }
.net[data-bars="3"] i:nth-child(-n+3), .net[data-bars="4"] i:nth-child(-n+4) { background: var(--cg-green); }
select, input, button { font: inherit; color: inherit; }
select { border: 1px solid var(--cg-line); border-radius: 6px; background: var(--cg-bg); padding: .15rem .25rem; font-size: 12px; }
input { width: 100%; border: 1px solid var(--cg-line); border-radius: 8px; padding: .45rem .6rem; background: var(--cg-bg); }
input:focus { outline: 2px solid var(--cg-accent); outline-offset: -1px; }
form label { display: block; margin-bottom: .5rem; font-size: 12px; color: var(--cg-muted); }
form label.check { display: flex; align-items: center; gap: .4rem; }
form label.check input { width: auto; }
button { border: 1px solid var(--cg-line); border-radius: 8px; background: #f3f5f9; padding: .45rem .7rem; cursor: pointer; }
button:hover:not(:disabled) { filter: brightness(.96); }
button:disabled { opacity: .45; cursor: default; }
button.green { background: var(--cg-green); border-color: var(--cg-green); color: #fff; }
button.red { background: var(--cg-red); border-color: var(--cg-red); color: #fff; }
button.primary { background: var(--cg-accent); border-color: var(--cg-accent); color: #fff; width: 100%; }
button[aria-pressed=true] { background: #e0e7ff; border-color: var(--cg-accent); }
.callinfo { display: grid; grid-template-columns: 1fr auto; gap: 0 .5rem; padding: .5rem .6rem; border-radius: 8px;
  background: #f6f8fb; margin-bottom: .6rem; }
.callinfo [data-role=peer] { font-weight: 650; font-size: 16px; }
.callinfo [data-role=timer] { font-variant-numeric: tabular-nums; font-size: 16px; align-self: center; grid-row: span 2; }
.callinfo [data-role=call-state] { color: var(--cg-muted); font-size: 12px; }
.dialrow { display: flex; gap: .4rem; margin-bottom: .6rem; }
.dialrow input { flex: 1; font-size: 16px; }
.pad { display: grid; grid-template-columns: repeat(3, 1fr); gap: .35rem; margin-bottom: .6rem; }
.pad button { font-size: 17px; padding: .5rem 0; background: var(--cg-bg); }
.controls { display: grid; grid-template-columns: repeat(3, 1fr); gap: .35rem; margin-bottom: .6rem; }
.transfer { display: flex; gap: .4rem; margin-bottom: .6rem; }
.settings { display: flex; flex-wrap: wrap; align-items: center; gap: .4rem; font-size: 12px; border-top: 1px solid var(--cg-line); padding-top: .6rem; }
.settings select { flex: 1; min-width: 6rem; }
.settings meter { width: 4rem; }
.notice { min-height: 1.2rem; font-size: 12px; color: var(--cg-muted); margin-top: .4rem; }
.notice[data-kind=error] { color: var(--cg-red); }
.popup { position: absolute; inset: .5rem; background: var(--cg-bg); border: 2px solid var(--cg-green); border-radius: 12px;
  padding: .8rem; display: flex; flex-direction: column; gap: .35rem; box-shadow: 0 10px 30px rgba(16, 24, 40, .2); z-index: 2; }
.popup-title { font-size: 12px; color: var(--cg-green); font-weight: 650; text-transform: uppercase; letter-spacing: .04em; }
.caller { font-size: 22px; font-weight: 700; }
dl { margin: 0; display: grid; grid-template-columns: auto 1fr; gap: .1rem .5rem; font-size: 12px; }
dt { color: var(--cg-muted); } dd { margin: 0; word-break: break-all; }
[data-role=customer-card] { flex: 1; overflow: auto; }
.popup-actions { display: grid; grid-template-columns: 1fr 1fr; gap: .5rem; }
`;
