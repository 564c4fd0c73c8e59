// Parses every ```mermaid block of the Markdown files given as arguments with mermaid itself (npm
// `mermaid`, the library GitHub renders these blocks with; DOM from npm `jsdom`), so a diagram
// that would show as an error box on GitHub fails CI. First proves the parser is live: a broken
// flowchart must be refused. Exit 0 only when every block parsed; prints "N passed, 0 failed".
import { readFileSync } from "node:fs";
import { JSDOM } from "jsdom";

const dom = new JSDOM("<!doctype html><html><body></body></html>");
globalThis.window = dom.window;
globalThis.document = dom.window.document;
globalThis.DOMParser = dom.window.DOMParser;
globalThis.Element = dom.window.Element;
const { default: mermaid } = await import("mermaid");

let refused = false;
try { await mermaid.parse("flowchart LR\n  a --> b[\n"); } catch { refused = true; }
if (!refused) { console.error("check-mermaid: mermaid accepted a broken flowchart"); process.exit(1); }

let passed = 0, failed = 0;
for (const file of process.argv.slice(2)) {
  const lines = readFileSync(file, "utf8").split("\n");
  for (let i = 0; i < lines.length; i++) {
    if (lines[i].trim() !== "```mermaid") continue;
    const start = i + 1;
    let end = start;
    while (end < lines.length && lines[end].trim() !== "```") end++;
    const where = `${file}:${start}`;
    try {
      const r = await mermaid.parse(lines.slice(start, end).join("\n"));
      passed++;
      console.log(`ok   ${where} (${r.diagramType})`);
    } catch (e) {
      failed++;
      console.log(`FAIL ${where}: ${e.message}`);
    }
    i = end;
  }
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 && passed > 0 ? 0 : 1);
