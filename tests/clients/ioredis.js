// ioredis (default configuration) through nearby: pipelines, a transaction,
// pub/sub resubscribe and a blocking pop, with exact results.
// Usage: node ioredis.js PORT; prints "ok".
const assert = require("assert");
const Redis = require("ioredis");

const port = Number(process.argv[2]);
const opts = { host: "127.0.0.1", port, maxRetriesPerRequest: 1 };

async function main() {
  const r = new Redis(opts);
  const p = r.pipeline();
  for (let i = 0; i < 100; i++) p.set(`js:${i}`, i);
  for (let i = 0; i < 100; i++) p.get(`js:${i}`);
  const res = await p.exec();
  assert.deepStrictEqual(res.slice(0, 100), Array(100).fill([null, "OK"]));
  assert.deepStrictEqual(
    res.slice(100),
    Array.from({ length: 100 }, (_, i) => [null, String(i)]),
  );

  const tx = await r.multi().incr("js:n").incr("js:n").get("js:n").exec();
  assert.deepStrictEqual(tx, [[null, 1], [null, 2], [null, "2"]]);

  const sub = new Redis(opts);
  const events = [];
  sub.on("message", (ch, msg) => events.push(["message", ch, msg]));
  assert.strictEqual(await sub.subscribe("js:ch"), 1);
  assert.strictEqual(await sub.unsubscribe("js:ch"), 0);
  assert.strictEqual(await sub.subscribe("js:ch"), 1);
  assert.strictEqual(await r.publish("js:ch", "hello"), 1);
  for (let i = 0; i < 50 && events.length === 0; i++) {
    await new Promise((ok) => setTimeout(ok, 20));
  }
  assert.deepStrictEqual(events, [["message", "js:ch", "hello"]]);
  sub.disconnect();

  const blocked = new Redis(opts);
  const popped = blocked.blpop("js:q", 5);
  await new Promise((ok) => setTimeout(ok, 300));
  assert.strictEqual(await r.rpush("js:q", "job"), 1);
  assert.deepStrictEqual(await popped, ["js:q", "job"]);
  blocked.disconnect();

  assert.strictEqual(await r.ping(), "PONG");
  r.disconnect();
  console.log("ok");
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
