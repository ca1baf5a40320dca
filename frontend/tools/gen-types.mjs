// Generates frontend/gen/ (TypeScript types and schemas of the API messages) from protos/ with
// buf and the local protoc-gen-es plugin; run from anywhere. `make frontend-gen` calls it.
import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const buf = process.env.BUF ?? join(root, '.build', 'node', 'node_modules', '.bin', 'buf');
rmSync(join(root, 'frontend', 'gen'), { recursive: true, force: true });
execFileSync(buf, ['generate', '--template', 'frontend/buf.gen.yaml', '--path', 'protos/paymesh'], {
  cwd: root,
  stdio: 'inherit',
});
