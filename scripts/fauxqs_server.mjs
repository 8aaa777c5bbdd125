// The benchmark's SQS stand-in: fauxqs (npm, MIT; installed by scripts/lib.sh
// ensure_fauxqs), served on a loopback port only. fauxqs's own CLI listens
// on every address (0.0.0.0), so this builds its app and listens itself.
//
//   node fauxqs_server.mjs FAUXQS_APP_JS PORT   (PORT 0: an ephemeral one)
//
// Prints "port <port>" on stdout once it accepts connections (what
// scripts/lib.sh start_piped waits for).
import { pathToFileURL } from "node:url";

const [appPath, port] = process.argv.slice(2);
const { buildApp } = await import(pathToFileURL(appPath).href);
const app = buildApp({ logger: false });
const address = await app.listen({ port: Number(port ?? 0), host: "127.0.0.1" });
console.log(`port ${new URL(address).port}`);
