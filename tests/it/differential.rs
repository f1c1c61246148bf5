//! Differential: the same commands, byte for byte the same replies, whether
//! sent through nearby (primary + 2 replicas behind it) or straight to a
//! standalone redis-server.

use crate::common::{Cluster, Nearby, RawConn, RedisServer};

/// Commands whose replies are deterministic across two servers (no random
/// hash-table orders, no times, no ids). Each line is split on spaces;
/// `\s` stands for a space inside an argument.
const SCRIPT: &str = r#"
PING
PING hello
ECHO nearby
SET s1 hello
GET s1
GET missing
APPEND s1 \sworld
GET s1
STRLEN s1
GETRANGE s1 0 4
SETRANGE s1 6 WORLD
GET s1
SET counter 10
INCR counter
INCRBY counter 5
DECR counter
DECRBY counter 3
INCRBYFLOAT counter 1.5
GET counter
MSET m1 a m2 b m3 c
MGET m1 m2 m3 missing
MSETNX m1 x m4 d
SETNX s1 nope
SETNX fresh yes
GETSET fresh no
GETDEL fresh
EXISTS s1 m1 missing
TYPE s1
SET ex1 v EX 100
TTL ex1
PERSIST ex1
TTL ex1
LCS m1 m2
SUBSTR s1 0 2
DEL m4
RENAME m3 m3b
GET m3b
GET m3
COPY m3b m3c
GET m3c
INCR s1
HSET h1 f1 v1 f2 v2 f3 3
HGET h1 f1
HMGET h1 f1 f2 nope
HGETALL h1
HKEYS h1
HVALS h1
HLEN h1
HEXISTS h1 f2
HINCRBY h1 f3 4
HINCRBYFLOAT h1 f3 0.5
HDEL h1 f2
HGETALL h1
HSETNX h1 f1 other
HSTRLEN h1 f1
HGET s1 f1
RPUSH l1 a b c d e
LPUSH l1 z
LRANGE l1 0 -1
LLEN l1
LINDEX l1 2
LPOS l1 c
LSET l1 0 y
LINSERT l1 BEFORE c bb
LRANGE l1 0 -1
LPOP l1
RPOP l1 2
LRANGE l1 0 -1
LTRIM l1 0 1
LRANGE l1 0 -1
RPUSH l2 1 2 3
LMOVE l2 l1 LEFT RIGHT
LRANGE l1 0 -1
LRANGE l2 0 -1
RPOPLPUSH l2 l1
LMPOP 2 l1 l2 LEFT COUNT 2
LREM l1 0 a
LLEN missing
SADD si 1 2 3 4 5
SCARD si
SISMEMBER si 3
SMISMEMBER si 1 9
SMEMBERS si
SADD si2 4 5 6
SINTER si si2
SINTERCARD 2 si si2
SUNION si si2
SDIFF si si2
SREM si 1
SMEMBERS si
SMOVE si si2 2
SMEMBERS si2
SINTERSTORE si3 si si2
SMEMBERS si3
ZADD z1 1 a 2 b 3 c 4 d
ZSCORE z1 c
ZMSCORE z1 a nope
ZCARD z1
ZCOUNT z1 2 3
ZRANGE z1 0 -1 WITHSCORES
ZRANGE z1 (1 3 BYSCORE
ZREVRANGE z1 0 1
ZRANGEBYSCORE z1 -inf +inf LIMIT 1 2
ZREVRANGEBYSCORE z1 +inf 2
ZRANK z1 c
ZREVRANK z1 c
ZINCRBY z1 10 a
ZRANGE z1 0 -1 WITHSCORES
ZADD zl 0 a 0 b 0 c 0 d
ZRANGEBYLEX zl [b (d
ZLEXCOUNT zl - +
ZREM z1 b
ZPOPMIN z1
ZPOPMAX z1
ZRANGE z1 0 -1
ZUNIONSTORE zu 2 z1 zl
ZRANGE zu 0 -1 WITHSCORES
ZINTER 2 zu zl
ZDIFF 2 zl zu
XADD st 1-1 f v
XADD st 1-2 f w
XADD st 2-0 g x
XLEN st
XRANGE st - +
XREVRANGE st + - COUNT 1
XREAD COUNT 2 STREAMS st 0
XGROUP CREATE st grp 0
XREADGROUP GROUP grp c1 COUNT 1 STREAMS st >
XPENDING st grp
XACK st grp 1-1
XDEL st 1-2
XTRIM st MAXLEN 1
XRANGE st - +
SETBIT bm 7 1
SETBIT bm 9 1
GETBIT bm 7
GETBIT bm 8
BITCOUNT bm
BITPOS bm 1
BITOP OR bm2 bm bm
GET bm2
BITFIELD bf SET u8 0 200 GET u8 0
BITFIELD_RO bf GET u4 0
PFADD hll a b c d
PFCOUNT hll
PFADD hll2 c d e
PFMERGE hll3 hll hll2
PFCOUNT hll3
GEOADD geo 13.361389 38.115556 Palermo 15.087269 37.502669 Catania
GEODIST geo Palermo Catania km
GEOPOS geo Palermo
GEOHASH geo Catania
GEOSEARCH geo FROMLONLAT 15 37 BYRADIUS 200 km ASC
GEORADIUS_RO geo 15 37 100 km
EVAL return\s1 0
EVAL return\sredis.call('get',KEYS[1]) 1 s1
EVAL redis.call('set',KEYS[1],ARGV[1])\sreturn\sredis.status_reply('DONE') 1 ev1 val
GET ev1
SCRIPT LOAD return\s'loaded'
EVALSHA 5b0f0f8a0e07ad8b5b0f6e7b5f0d9b5c1b7d9ef0 0
EVAL_RO return\sredis.call('get',KEYS[1]) 1 ev1
EVAL_RO redis.call('set',KEYS[1],'x') 1 ev1
MULTI
SET tx1 1
INCR tx1
GET tx1
EXEC
MULTI
SET tx2 a
DISCARD
GET tx2
EXEC
DISCARD
WATCH tx1
MULTI
INCR tx1
EXEC
UNWATCH
SELECT 2
SET indb2 yes
GET indb2
SELECT 0
GET indb2
SELECT 99
SELECT abc
SELECT +1
SELECT 01
SELECT -0
HELLO +3
OBJECT ENCODING l1
DBSIZE
EXPIRE s1 1000
PEXPIRETIME nope
UNLINK s1
GET s1
SORT l2
SORT_RO si
DUMP missing
NOSUCHCOMMAND a b
GET
SET onlykey
HSET h1
LPUSH s1
CLIENT GETNAME
CLIENT SETNAME app-1
CLIENT GETNAME
CLIENT SETNAME bad\sname
UNSUBSCRIBE
PUNSUBSCRIBE a b
"#;

fn script() -> Vec<Vec<String>> {
    SCRIPT
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| l.split(' ').map(|a| a.replace("\\s", " ")).collect())
        .collect()
}

fn is_write(args: &[String]) -> bool {
    // After anything that may change data, let the replicas catch up so a
    // read through nearby (served by a replica) sees what a direct read sees.
    !matches!(
        args[0].to_ascii_uppercase().as_str(),
        "GET" | "MGET" | "PING" | "ECHO" | "STRLEN" | "GETRANGE" | "EXISTS" | "TYPE" | "TTL"
    )
}

fn run_diff(resp3: bool) {
    let cluster = Cluster::start(2);
    let direct = RedisServer::start();
    let nearby = Nearby::start_for(&cluster, &[]);

    let mut via = RawConn::connect(nearby.port);
    let mut dir = RawConn::connect(direct.port);
    if resp3 {
        // HELLO's reply carries a connection id: check its shape, not bytes.
        let a = via.cmd(&["HELLO", "3"]);
        let b = dir.cmd(&["HELLO", "3"]);
        assert!(
            a.starts_with(b"%7\r\n"),
            "{:?}",
            String::from_utf8_lossy(&a)
        );
        assert!(b.starts_with(b"%7\r\n"));
    }
    let mut compared = 0;
    for args in script() {
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let a = via.cmd(&argv);
        let b = dir.cmd(&argv);
        assert_eq!(
            String::from_utf8_lossy(&a),
            String::from_utf8_lossy(&b),
            "reply to {argv:?} differs (left: nearby, right: direct)"
        );
        if is_write(&args) {
            cluster.wait_replicated();
        }
        compared += 1;
    }
    assert!(compared > 200, "only {compared} commands compared");
    // Reads really went to replicas during the run.
    let replica_gets: u64 = cluster.replicas.iter().map(|r| r.calls("get")).sum();
    assert!(replica_gets >= 10, "replicas served {replica_gets} GETs");
}

#[test]
fn resp2_replies_match_direct_redis() {
    run_diff(false);
}

#[test]
fn resp3_replies_match_direct_redis() {
    run_diff(true);
}
