#!/usr/bin/env node
// Bundles the ES-module sources into the single files callgate serves (and npm ships), with
// no dependency: dist/sipcall.mjs (ES module, default export SipCall), dist/sipcall.js
// (classic script, global SipCall), dist/softphone.mjs and dist/softphone.js (the bar, global
// CallgateSoftphone). The outputs are committed so building callgate never runs npm;
// test/build.test.js fails when they are stale.
//
//   node web-client/build.mjs           write dist/
//   node web-client/build.mjs --check   exit 1 if dist/ is stale
//
// It understands the import/export forms the sources use and refuses any other, so a source
// change cannot silently produce a broken bundle.

import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.dirname(fileURLToPath(import.meta.url));

/** What to build: entry module, output base name, and the classic build's global. */
export const BUNDLES = [
  { entry: 'src/sipcall.js', out: 'sipcall', global: 'SipCall', classicValue: 'default' },
  { entry: 'bar/softphone.js', out: 'softphone', global: 'CallgateSoftphone', classicValue: 'namespace' },
];

const IMPORT = /^import\s+([\s\S]*?)\s+from\s+['"](\.{1,2}\/[^'"]+)['"];?[ \t]*$/gm;
const EXPORT_DEFAULT = /^export\s+default\s+(class|function)\s+([A-Za-z_$][\w$]*)/gm;
const EXPORT_DECL = /^export\s+(async\s+function\*?|function\*?|class|const|let)\s+([A-Za-z_$][\w$]*)/gm;
const EXPORT_LIST = /^export\s*\{([^}]*)\};?[ \t]*$/gm;

function moduleVar(file) {
  return '__' + path.relative(root, file).replace(/\.js$/, '').replace(/[^A-Za-z0-9]/g, '_');
}

/** Parses one module: its imports (resolved paths), its exported names and its body. */
function parse(file) {
  let body = readFileSync(file, 'utf8');
  const imports = [];
  body = body.replace(IMPORT, (_, clause, spec) => {
    const target = path.resolve(path.dirname(file), spec);
    const parts = clause.trim();
    let defaultName = null;
    let named = [];
    const braces = parts.match(/\{([\s\S]*)\}/);
    if (braces) {
      named = braces[1]
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean)
        .map((s) => {
          const [from, as] = s.split(/\s+as\s+/);
          return { from, as: as || from };
        });
    }
    const head = parts.replace(/\{[\s\S]*\}/, '').replace(/,\s*$/, '').trim();
    if (head) {
      if (!/^[A-Za-z_$][\w$]*$/.test(head)) throw new Error(`${file}: unsupported import clause "${parts}"`);
      defaultName = head;
    }
    imports.push({ target, defaultName, named });
    return '';
  });
  const exports = [];
  body = body.replace(EXPORT_DEFAULT, (_, kind, name) => {
    exports.push({ local: name, as: 'default' });
    return `${kind} ${name}`;
  });
  body = body.replace(EXPORT_DECL, (_, kind, name) => {
    exports.push({ local: name, as: name });
    return `${kind} ${name}`;
  });
  body = body.replace(EXPORT_LIST, (_, list) => {
    for (const item of list.split(',').map((s) => s.trim()).filter(Boolean)) {
      const [local, as] = item.split(/\s+as\s+/);
      exports.push({ local, as: as || local });
    }
    return '';
  });
  const leftover = body.match(/^\s*(import|export)\b.*$/m);
  if (leftover) throw new Error(`${file}: unsupported module syntax: ${leftover[0].trim()}`);
  return { file, imports, exports, body: body.trim() };
}

/** Modules reachable from `entry`, dependencies first. */
function graph(entry) {
  const order = [];
  const seen = new Set();
  const visit = (file, stack) => {
    if (stack.includes(file)) throw new Error(`import cycle: ${[...stack, file].join(' -> ')}`);
    if (seen.has(file)) return;
    const mod = parse(file);
    for (const imp of mod.imports) visit(imp.target, [...stack, file]);
    seen.add(file);
    order.push(mod);
  };
  visit(path.resolve(root, entry), []);
  return order;
}

function wrap(mod, strict) {
  const lines = [`const ${moduleVar(mod.file)} = (() => {`];
  if (strict) lines.push("'use strict';");
  for (const imp of mod.imports) {
    const source = moduleVar(imp.target);
    if (imp.defaultName) lines.push(`const ${imp.defaultName} = ${source}.default;`);
    if (imp.named.length) {
      lines.push(`const { ${imp.named.map((n) => (n.from === n.as ? n.from : `${n.from}: ${n.as}`)).join(', ')} } = ${source};`);
    }
  }
  lines.push(`// ---- ${path.relative(root, mod.file)}`);
  lines.push(mod.body);
  const entries = mod.exports.map((e) => (e.as === e.local ? e.local : `${JSON.stringify(e.as)}: ${e.local}`));
  lines.push(`return Object.freeze({ ${entries.join(', ')} });`);
  lines.push('})();');
  return lines.join('\n');
}

/** The bundle text for one entry in one format ('esm' or 'classic'). */
export function bundle({ entry, global, classicValue }, format) {
  const mods = graph(entry);
  const main = mods[mods.length - 1];
  const entryVar = moduleVar(main.file);
  const header =
    `// ${global} ${format === 'esm' ? 'ES module' : 'classic script'} — GENERATED by web-client/build.mjs from ` +
    `web-client/${entry} and its imports; do not edit.\n// Regenerate: node web-client/build.mjs\n`;
  const body = mods.map((m) => wrap(m, format === 'classic')).join('\n\n');
  if (format === 'esm') {
    const named = main.exports.filter((e) => e.as !== 'default').map((e) => e.as);
    const hasDefault = main.exports.some((e) => e.as === 'default');
    return (
      header +
      '\n' +
      body +
      '\n\n' +
      (hasDefault ? `export default ${entryVar}.default;\n` : '') +
      (named.length ? `export const { ${named.join(', ')} } = ${entryVar};\n` : '')
    );
  }
  const value = classicValue === 'default' ? `${entryVar}.default` : entryVar;
  return `${header}(function () {\n'use strict';\n${body}\n\nglobalThis.${global} = ${value};\n})();\n`;
}

/** Every output file and its text. */
export function outputs() {
  const files = [];
  for (const b of BUNDLES) {
    files.push({ file: path.join(root, 'dist', `${b.out}.mjs`), text: bundle(b, 'esm') });
    files.push({ file: path.join(root, 'dist', `${b.out}.js`), text: bundle(b, 'classic') });
  }
  return files;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const check = process.argv.includes('--check');
  let stale = 0;
  for (const { file, text } of outputs()) {
    let current = null;
    try {
      current = readFileSync(file, 'utf8');
    } catch {
      // missing counts as stale
    }
    if (current === text) continue;
    stale++;
    if (check) {
      console.error(`stale: ${path.relative(root, file)}`);
    } else {
      mkdirSync(path.dirname(file), { recursive: true });
      writeFileSync(file, text);
      console.log(`wrote ${path.relative(root, file)}`);
    }
  }
  if (check && stale) {
    console.error('run: node web-client/build.mjs');
    process.exit(1);
  }
}
