// The official OpenAI and Replicate JavaScript clients against `flux serve`, with only the base URL changed.
//
//   FLUX_API_KEYS=k1 dotnet run --project src/FluxNative.Cli -c Release -- serve --demo --urls http://127.0.0.1:8091 &
//   cd tools/clients && npm install --ignore-scripts && FLUX_URL=http://127.0.0.1:8091 FLUX_KEY=k1 node check-client-libraries.mjs
//
// Exits non-zero if a call fails or a status is not the one expected. Not part of ./test.sh: it needs npm
// packages (CI installs nothing from npm); the server's own tests cover the same shapes without them.
import OpenAI from "openai";
import Replicate from "replicate";

const base = process.env.FLUX_URL ?? "http://127.0.0.1:8080";
const key = process.env.FLUX_KEY ?? "k1";
const expect = (ok, what) => { if (!ok) { console.error(`FAILED: ${what}`); process.exit(1); } console.log(`ok: ${what}`); };

const openai = new OpenAI({ apiKey: key, baseURL: `${base}/v1` });
const images = await openai.images.generate({ model: "flux-dev", prompt: "a lighthouse", size: "256x256", response_format: "b64_json", n: 2 });
expect(images.data.length === 2 && images.data[0].b64_json.length > 1000, "openai images.generate, n=2, b64_json");

const replicate = new Replicate({ auth: key, baseUrl: `${base}/v1` });
let p = await replicate.predictions.create({ model: "black-forest-labs/flux-dev", input: { prompt: "a fox", num_inference_steps: 4, image_size: 256 } });
expect(["starting", "processing"].includes(p.status), `replicate predictions.create -> ${p.status}`);
p = await replicate.wait(p, { interval: 200 });
expect(p.status === "succeeded" && p.output.length === 1, `replicate wait (poll) -> ${p.status}`);

let slow = await replicate.predictions.create({ model: "black-forest-labs/flux-dev", input: { prompt: "a slow fox", num_inference_steps: 50, image_size: 1024 } });
await new Promise(resolve => setTimeout(resolve, 1500));
slow = await replicate.predictions.cancel(slow.id);
slow = await replicate.predictions.get(slow.id);
expect(slow.status === "canceled", `replicate cancel, then get -> ${slow.status}`);

const output = await replicate.run("black-forest-labs/flux-dev", { input: { prompt: "a cat", num_inference_steps: 2, image_size: 256 } });
expect(String(output[0]).startsWith(base), "replicate.run returns this server's file URL");
