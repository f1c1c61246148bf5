"""redis-py (default configuration) through nearby: pipelines, a
transaction, WATCH, pub/sub resubscribe and a blocking pop, with exact
results. Usage: python3 redis_py.py PORT; prints "ok"."""
import sys
import threading
import time

import redis

port = int(sys.argv[1])
r = redis.Redis(host="127.0.0.1", port=port, decode_responses=True)

p = r.pipeline(transaction=False)
for i in range(100):
    p.set(f"py:{i}", i)
for i in range(100):
    p.get(f"py:{i}")
res = p.execute()
assert res[:100] == [True] * 100, res[:100]
assert res[100:] == [str(i) for i in range(100)], res[100:]

p = r.pipeline(transaction=True)
p.incr("py:n")
p.incr("py:n")
p.get("py:n")
assert p.execute() == [1, 2, "2"]

with r.pipeline() as p:
    p.watch("py:w")
    assert p.get("py:w") is None
    p.multi()
    p.set("py:w", "x")
    assert p.execute() == [True]
assert r.get("py:w") == "x"

ps = r.pubsub()
ps.subscribe("py:ch")
ps.unsubscribe("py:ch")
ps.subscribe("py:ch")
got = [ps.get_message(timeout=5) for _ in range(3)]
assert [(m["type"], m["data"]) for m in got] == [
    ("subscribe", 1),
    ("unsubscribe", 0),
    ("subscribe", 1),
], got
assert r.publish("py:ch", "hello") == 1
m = ps.get_message(timeout=5)
assert (m["type"], m["data"]) == ("message", "hello"), m
ps.close()


def push():
    time.sleep(0.3)
    redis.Redis(host="127.0.0.1", port=port).rpush("py:q", "job")


threading.Thread(target=push).start()
assert r.blpop(["py:q"], timeout=5) == ("py:q", "job")

assert r.ping() is True
print("ok")
