// Parses an AsyncAPI document with the official parser and prints every diagnostic as one
// JSON line; exits 1 when there is any error or warning (severity 0 or 1).
import { readFileSync } from 'node:fs';
import { Parser } from '@asyncapi/parser';

const text = readFileSync(process.argv[2], 'utf8');
const parser = new Parser();
const { document, diagnostics } = await parser.parse(text);
let bad = document === undefined;
for (const d of diagnostics) {
  console.log(JSON.stringify({ severity: d.severity, code: d.code, message: d.message, path: d.path }));
  if (d.severity <= 1) bad = true;
}
process.exit(bad ? 1 : 0);
